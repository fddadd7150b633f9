"""Traces in SQLite: runs, agents, model calls, messages and tool calls.

Imports nothing from `swarm`, `tools`, `model_runtime` or `tui`. `TraceStore` opens a
database file in WAL mode; the swarm's recorder is its one writer.
"""

from storage.errors import StorageError
from storage.store import TraceStore, default_db_path

__all__ = ["StorageError", "TraceStore", "default_db_path"]
