"""moe-swarm's embedded runtime for Kimi K2 / DeepSeek-V3-architecture MoE models.

A standalone engine: it imports nothing from `swarm`, `tools`, `storage` or `tui`.
Importing the package is cheap (no torch): `load_model` and friends load on first use,
so `model_runtime.cli` stays quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_runtime.config import ModelConfig
    from model_runtime.engine.llm import LLM, EngineConfig
    from model_runtime.engine.sampling_params import SamplingParams
    from model_runtime.layers.latent_cache import DenseLatentCache
    from model_runtime.layers.mla import LatentAttention
    from model_runtime.loader import load_model

__all__ = ["LLM", "DenseLatentCache", "EngineConfig", "LatentAttention", "ModelConfig", "SamplingParams", "load_model"]

_LAZY = {
    "load_model": "model_runtime.loader",
    "ModelConfig": "model_runtime.config",
    "DenseLatentCache": "model_runtime.layers.latent_cache",
    "LatentAttention": "model_runtime.layers.mla",
    "LLM": "model_runtime.engine.llm",
    "EngineConfig": "model_runtime.engine.llm",
    "SamplingParams": "model_runtime.engine.sampling_params",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model_runtime' has no attribute {name!r}")
