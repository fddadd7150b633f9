"""The runtime's errors.

    RuntimeEngineError       base of every error model_runtime raises on purpose
"""

from __future__ import annotations


class RuntimeEngineError(Exception):
    """Base of every error the runtime raises on purpose."""
