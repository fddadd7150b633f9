"""The optional Triton kernels (quant/triton_int4.py, engine/triton_mla.py), imported on
first use: importing one imports triton, which CPU-only torch builds may not have."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def triton_module(name: str) -> ModuleType | None:
    """The kernel module `name`, or None where triton is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
