"""The engine's errors, under the runtime's base.

    RuntimeEngineError
    └── EngineError              the serving engine failed
        ├── InvalidRequestError  a request the engine cannot serve (bad params, too long)
        ├── EngineClosedError    the engine was closed or its loop died
        │   └── WorkerError      a tensor-parallel worker process died or failed
        └── TokenizerError       no usable tokenizer in the checkpoint
"""

from __future__ import annotations

from model_runtime.errors import RuntimeEngineError


class EngineError(RuntimeEngineError):
    """The serving engine failed."""


class InvalidRequestError(EngineError, ValueError):
    """A request the engine cannot serve: bad sampling parameters or a prompt too long."""


class EngineClosedError(EngineError):
    """The engine was closed, or its loop stopped on an error."""


class TokenizerError(EngineError):
    """The checkpoint has no usable tokenizer files."""


class WorkerError(EngineClosedError):
    """A tensor-parallel worker process died or raised; the message names its rank."""
