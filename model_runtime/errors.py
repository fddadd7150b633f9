"""Errors raised by the embedded runtime.

One base class, small named subclasses (the httpx/anyio style)::

    RuntimeEngineError
    ├── ConfigError                  config.json is unreadable or inconsistent
    │   ├── UnsupportedModelError    a model_type or feature we do not implement
    │   └── ParallelConfigError      tensor_parallel_size does not fit the model
    ├── CheckpointError              the weights on disk do not fit the config
    │   ├── CheckpointNotFoundError  a file the checkpoint needs is missing
    │   └── ShapeMismatchError       a tensor has the wrong shape (names the tensor)
    └── UnsupportedQuantizationError a quantization scheme we cannot load
"""

from __future__ import annotations


class RuntimeEngineError(Exception):
    """Base class of every error the model runtime raises on purpose."""


class ConfigError(RuntimeEngineError):
    """config.json is missing a field, unreadable, or inconsistent."""


class UnsupportedModelError(ConfigError):
    """The checkpoint's model_type (or one of its features) is not implemented."""


class ParallelConfigError(ConfigError):
    """The tensor-parallel size does not split the model's heads, MLPs or experts evenly."""


class CheckpointError(RuntimeEngineError):
    """The checkpoint's tensors do not match what the config describes."""


class CheckpointNotFoundError(CheckpointError):
    """A file the checkpoint needs (config, shard, index) does not exist."""


class ShapeMismatchError(CheckpointError):
    """A tensor in the checkpoint has a shape other than the model expects."""


class UnsupportedQuantizationError(RuntimeEngineError):
    """The checkpoint uses a quantization scheme this runtime cannot load."""
