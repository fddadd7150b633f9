"""Rotary position embedding with YaRN scaling, as DeepSeek-V3 and Kimi K2 use it.

YaRN blends interpolated and extrapolated frequencies over a ramp between the
`beta_fast` and `beta_slow` rotation counts, multiplies cos/sin by
mscale(factor, mscale) / mscale(factor, mscale_all_dim), and the attention's softmax
scale by mscale(factor, mscale_all_dim)**2 (`softmax_scale`). The checkpoints store the
rotary dims as interleaved pairs (x0, x1), (x2, x3), ...; `apply_rotary` rotates those
pairs and writes them de-interleaved (evens then odds), as transformers does. Queries and
keys get the same permutation, so their dot products are unchanged.

Shapes: N tokens, R = qk_rope_head_dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model_runtime.config import RopeConfig


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1.0 else 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(rope: RopeConfig, qk_head_dim: int) -> float:
    scale = qk_head_dim**-0.5
    if rope.is_yarn and rope.mscale_all_dim:
        scale *= yarn_mscale(rope.factor, rope.mscale_all_dim) ** 2
    return scale


def inv_frequencies(rope: RopeConfig, dim: int) -> tuple[torch.Tensor, float]:
    """The R/2 inverse frequencies (on CPU, also while a model is built on the meta device,
    where `arange` would import torch._dynamo: a second of every load) and the factor
    cos/sin are multiplied by."""
    pos_freqs = rope.theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)  # [R/2]
    if not rope.is_yarn:
        return 1.0 / pos_freqs, 1.0

    def correction_dim(num_rotations: float) -> float:
        wavelengths = rope.original_max_position_embeddings / (num_rotations * 2 * math.pi)
        return dim * math.log(wavelengths) / (2 * math.log(rope.theta))

    low = max(math.floor(correction_dim(rope.beta_fast)), 0)
    high = min(math.ceil(correction_dim(rope.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)  # [R/2]
    extrapolate = 1 - ramp
    inv_freq = (1.0 / (rope.factor * pos_freqs)) * ramp + (1.0 / pos_freqs) * extrapolate
    if rope.attention_factor is not None:
        return inv_freq, float(rope.attention_factor)
    return inv_freq, yarn_mscale(rope.factor, rope.mscale) / yarn_mscale(rope.factor, rope.mscale_all_dim)


class RotaryEmbedding(nn.Module):
    """Turns positions into (cos, sin) tables `[N, R/2]`; no cache, no max length."""

    def __init__(self, rope: RopeConfig, dim: int) -> None:
        super().__init__()
        inv_freq, self.attention_factor = inv_frequencies(rope, dim)
        self.is_interleaved = rope.is_interleaved
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # [N, R/2]
        cos = (freqs.cos() * self.attention_factor).to(dtype)  # [N, R/2]
        sin = (freqs.sin() * self.attention_factor).to(dtype)  # [N, R/2]
        return cos, sin


def rotation_tables(cos: torch.Tensor, sin: torch.Tensor, *, is_interleaved: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(cos, sin)` for `apply_rotary`, or `(cos + i*sin, None)` where its complex path
    applies (interleaved, float32/64): built once per forward, not once per call."""
    if is_interleaved and cos.dtype in (torch.float32, torch.float64):
        return torch.complex(cos, sin), None
    return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor | None, *, is_interleaved: bool) -> torch.Tensor:
    """Rotate `x [N, ..., R]` by per-token `cos, sin [N, R/2]`, or by the complex
    rotation `cos [N, R/2]` (sin None) that `rotation_tables` made."""
    if cos.is_complex():
        return _rotate_pairs(x if _is_complex_viewable(x) else x.contiguous(), cos)
    assert sin is not None, "a real cos comes with its sin"
    if is_interleaved and _is_complex_viewable(x):
        return _rotate_pairs(x, torch.complex(cos, sin))
    shape = (cos.shape[0],) + (1,) * (x.dim() - 2) + (cos.shape[-1],)
    cos, sin = cos.view(shape), sin.view(shape)
    if is_interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Each pair is a complex number x0 + i*x1: one complex product rotates them all
    (three kernels instead of eight; a small decode step is launch-bound)."""
    shape = (rotation.shape[0],) + (1,) * (x.dim() - 2) + (rotation.shape[-1],)
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # [N, ..., R/2]
    rotated = torch.view_as_real(pairs * rotation.view(shape))  # [N, ..., R/2, 2]
    return rotated.transpose(-1, -2).flatten(-2)  # [N, ..., R] evens then odds


def _is_complex_viewable(x: torch.Tensor) -> bool:
    """Whether `view_as_complex` can read x's last-dim pairs in place (float32/64 only)."""
    strides = x.stride()
    return (
        x.dtype in (torch.float32, torch.float64)
        and strides[-1] == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in strides[:-1])
    )
