"""Storage errors.

    StorageError          the trace database cannot be opened, read or written
    └── RunNotFound       no run with that id (or id prefix)
"""

from __future__ import annotations


class StorageError(Exception):
    """The trace database cannot be opened, read or written."""


class RunNotFound(StorageError):
    """No run matches the given id."""
