"""SwiGLU feed-forward block: the dense layers' MLP and the MoE's shared experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)
        self.gate_up: torch.Tensor | None = None  # [2I, D] once fused: gate_proj's and up_proj's weights are views of it

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """One matmul for gate and up: their weights move into one `[2I, D]` tensor and
        become views of it (no extra memory; in-place updates still reach both)."""
        gate, up = self.gate_proj.weight, self.up_proj.weight
        if self.gate_up is not None or gate.dtype != up.dtype or gate.device != up.device:
            return
        fused = torch.cat([gate, up])  # [2I, D]
        gate.data, up.data = fused[: gate.shape[0]], fused[gate.shape[0] :]
        self.gate_up = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is not None:
            gate, up = F.linear(x, self.gate_up).chunk(2, dim=-1)  # [N, I] each
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
