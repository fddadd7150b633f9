"""What a checkpoint costs: parameter counts, resident bytes by dtype, KV bytes per token.

Computed from config.json alone by building the model on the meta device (no weights
read, no memory used), so it works for a 1T-parameter checkpoint on a laptop. INT4
weights count as their logical (unpacked) parameters; their packed bytes and scales are
what "resident" reports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from model_runtime.config import ModelConfig
from model_runtime.errors import CheckpointNotFoundError
from model_runtime.layers.moe import MoE, RoutedExperts


@dataclass(frozen=True)
class ModelInfo:
    config: ModelConfig
    num_params: int
    num_active_params: int
    num_routed_expert_params: int
    resident_bytes_by_dtype: dict[str, int]
    kv_bytes_per_token: int
    checkpoint_bytes: int

    @property
    def resident_bytes(self) -> int:
        return sum(self.resident_bytes_by_dtype.values())


def _logical_params(tensor: torch.Tensor, name: str) -> int:
    if name.endswith("_packed"):
        return tensor.numel() * 8
    if name.endswith("_scale"):
        return 0
    return tensor.numel()


def model_info(path: str | Path, *, dtype: torch.dtype = torch.bfloat16) -> ModelInfo:
    from model_runtime.loader import build_empty_model

    path = Path(path)
    if not path.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {path} does not exist")
    config = ModelConfig.from_path(path)
    model = build_empty_model(config, dtype, "meta")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    tensors = {n: t for n, t in tensors.items() if not n.endswith("inv_freq")}
    by_dtype: dict[str, int] = defaultdict(int)
    for tensor in tensors.values():
        by_dtype[str(tensor.dtype).removeprefix("torch.")] += tensor.numel() * tensor.element_size()
    total = sum(_logical_params(t, n) for n, t in tensors.items())
    routed = 0
    for module in model.modules():
        if isinstance(module, MoE):
            experts: RoutedExperts = module.experts
            per_expert = 3 * experts.dim * experts.hidden_dim
            routed += per_expert * experts.num_experts
    active_fraction = config.num_experts_per_tok / config.n_routed_experts if config.n_routed_experts else 0.0
    active = total - routed + round(routed * active_fraction)
    on_disk = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    return ModelInfo(
        config=config,
        num_params=total,
        num_active_params=active,
        num_routed_expert_params=routed,
        resident_bytes_by_dtype=dict(by_dtype),
        kv_bytes_per_token=config.kv_bytes_per_token(torch.empty(0, dtype=dtype).element_size()),
        checkpoint_bytes=on_disk,
    )
