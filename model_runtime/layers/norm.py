"""RMSNorm, computed in float32 and cast back (as the reference checkpoints were trained)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime import cpu_kernels


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.kernel: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None  # see fuse_for_inference

    def fuse_for_inference(self) -> None:
        """On CPU in float32, one C call per norm (model_runtime/cpu_kernels.py) where a C
        compiler builds it; F.rms_norm is several operations there. Serving only."""
        if self.weight.device.type == "cpu" and self.weight.dtype == torch.float32:
            self.kernel = cpu_kernels.rms_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None and x.dtype == torch.float32 and x.device.type == "cpu" and not x.requires_grad:
            return self.kernel(x, self.weight, self.eps)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # The weight inside the one call: the same products, two ops fewer per norm
            # (a tiny model's decode step runs a dozen norms).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x / sqrt(mean(x^2) + eps), one call
        return self.weight * normed.to(x.dtype)
