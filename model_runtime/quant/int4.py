"""INT4 routed experts in compressed-tensors `pack-quantized` layout, kept packed.

Layout (per linear, as Kimi K2-Thinking/K2.5 ship it): `weight_packed` int32
`[out, in/8]` holds q + 8 (0..15) for column 8k+j in bits 4j..4j+3 of word k (lowest
nibble first); `weight_scale` bf16 `[out, in/G]` (G = group size, 32); the weight is
(q) * scale, symmetric, no zero point. `Int4Experts` stores every expert of a layer
stacked in that layout (0.5625 bytes per weight with G=32 against 2 for bf16: 0.28x)
and multiplies W4A16: each expert's weights are dequantized on the fly to the
activation dtype, one expert (tile) at a time, just before its matmul, and dropped
after (on CPU, a layer small enough, `CPU_DEQUANTIZED_MAX_BYTES`, keeps one dequantized
copy of all its experts instead: see `Int4Experts.stacked_weights`). On CUDA, when triton is importable, all busy experts run in one grouped Triton
kernel per projection instead (quant/triton_int4.py: dequantization fused into the
matmul, no host sync, so CUDA graphs can capture it). `quantize_experts_int4` is the
pass that swaps a built model's dense experts for packed ones. Shapes: E experts,
D hidden, I moe_intermediate_size, G group size.
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime.errors import ShapeMismatchError
from model_runtime.layers.moe import DenseExperts, MoE, RoutedExperts
from model_runtime.triton_kernels import triton_module

_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)  # [8]
CPU_DEQUANTIZED_MAX_BYTES = 8 << 20  # per layer: Int4Experts.stacked_weights keeps a dequantized copy up to this


def pack_int4(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize `weight [out, in]` symmetrically per group; return (packed int32 `[out, in/8]`,
    scale bf16 `[out, in/G]`). The scale is absmax/7 rounded to bf16 (no clipping)."""
    out_dim, in_dim = weight.shape
    if in_dim % group_size or group_size % 8:
        raise ShapeMismatchError(f"in features {in_dim} are not a multiple of the group size {group_size}")
    groups = weight.float().view(out_dim, in_dim // group_size, group_size)  # [out, in/G, G]
    scale = (groups.abs().amax(-1) / 7.0).clamp(min=1e-8).to(torch.bfloat16)  # [out, in/G]
    q = (groups / scale.float()[..., None]).round().clamp(-8, 7).to(torch.int32) + 8  # [out, in/G, G]
    nibbles = q.view(out_dim, in_dim // 8, 8)  # [out, in/8, 8]
    packed = (nibbles << _SHIFTS.to(q.device)).sum(-1, dtype=torch.int64)  # [out, in/8]
    packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)  # [out, in/8]
    return packed, scale


def unpack_int4(packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantize `packed [..., out, in/8]` with `scale [..., out, in/G]` to `[..., out, in]`.

    Reads each int32 word as two little-endian 16-bit halves and maps each half to its
    four signed values through a 65536-entry table (512 KiB in bf16): one gather
    instead of eight shift-and-mask passes, about 1.5x faster on CPU than a byte table
    and 3-4x faster than shifting."""
    *lead, out_dim, words = packed.shape
    if sys.byteorder == "big" and packed.device.type == "cpu":
        nibbles = (packed[..., None] >> _SHIFTS.to(packed.device)) & 0xF  # [..., out, in/8, 8]
        q = (nibbles - 8).to(dtype)
    else:
        halves = packed.contiguous().view(torch.int16).long().add_(32768)  # [..., out, in/4]
        q = F.embedding(halves, _half_word_table(dtype, packed.device))  # [..., out, in/4, 4]
    q = q.view(*lead, out_dim, scale.shape[-1], -1)  # [..., out, in/G, G]
    return (q * scale.to(dtype)[..., None]).view(*lead, out_dim, words * 8)


@functools.cache
def _half_word_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Row h + 32768 holds the four nibbles (minus 8) of the int16 value h, lowest first: `[65536, 4]`."""
    half = torch.arange(-32768, 32768) & 0xFFFF  # [65536]
    nibbles = torch.stack([(half >> (4 * j)) & 0xF for j in range(4)], dim=-1)  # [65536, 4]
    return (nibbles - 8).to(device=device, dtype=dtype)


class Int4Experts(RoutedExperts):
    """A layer's routed experts, packed INT4; gate|up fused in `w13_*` like DenseExperts."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int, group_size: int = 32) -> None:
        super().__init__()
        for features in (dim, hidden_dim):
            if features % group_size:
                raise ShapeMismatchError(f"expert dim {features} is not a multiple of group size {group_size}")
        self.num_experts, self.dim, self.hidden_dim, self.group_size = num_experts, dim, hidden_dim, group_size
        e, d, i, g = num_experts, dim, hidden_dim, group_size
        self.register_buffer("w13_packed", torch.zeros(e, 2 * i, d // 8, dtype=torch.int32))  # [E, 2I, D/8]
        self.register_buffer("w13_scale", torch.zeros(e, 2 * i, d // g, dtype=torch.bfloat16))  # [E, 2I, D/G]
        self.register_buffer("w2_packed", torch.zeros(e, d, i // 8, dtype=torch.int32))  # [E, D, I/8]
        self.register_buffer("w2_scale", torch.zeros(e, d, i // g, dtype=torch.bfloat16))  # [E, D, I/G]

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = self.stacked_weights(dtype)
        if stacked is not None:
            return stacked[0][expert], stacked[1][expert]
        w13 = unpack_int4(self.w13_packed[expert], self.w13_scale[expert], dtype)  # [2I, D]
        w2 = unpack_int4(self.w2_packed[expert], self.w2_scale[expert], dtype)  # [D, I]
        return w13, w2

    def stacked_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """On CPU, for a layer whose dequantized experts are small (`CPU_DEQUANTIZED_MAX_BYTES`:
        tiny models such as the demo's), every expert dequantized once and kept: a decode
        step then runs the few batched ops of the base class's dense or grouped paths
        instead of unpacking each busy expert again, which on CPU cost more than the
        matmuls. The copy is remade when any packed buffer is replaced or written in place
        (a reload); larger layers stay packed and dequantize per expert, as on GPU."""
        if self.w13_packed.device.type != "cpu" or self.w13_packed.is_meta:
            return None
        e, d, i = self.num_experts, self.dim, self.hidden_dim
        if 3 * e * d * i * dtype.itemsize > CPU_DEQUANTIZED_MAX_BYTES:
            return None
        buffers = (self.w13_packed, self.w13_scale, self.w2_packed, self.w2_scale)
        key = (dtype, *((b.data_ptr(), b._version) for b in buffers))
        cached = self.__dict__.get("_dequantized")
        if cached is None or cached[0] != key:
            w13 = unpack_int4(self.w13_packed, self.w13_scale, dtype)  # [E, 2I, D]
            w2 = unpack_int4(self.w2_packed, self.w2_scale, dtype)  # [E, D, I]
            cached = self.__dict__["_dequantized"] = (key, (w13, w2))
        return cached[1]

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_w: torch.Tensor) -> torch.Tensor:
        kernels = triton_module("model_runtime.quant.triton_int4") if x.is_cuda else None
        if kernels is None:
            return super().forward(x, topk_idx, topk_w)  # [N, D]
        return kernels.int4_moe(x, topk_idx, topk_w, self.w13_packed, self.w13_scale, self.w2_packed, self.w2_scale)  # [N, D]

    def supports_cuda_graphs(self, device: torch.device) -> bool:
        return device.type == "cuda" and triton_module("model_runtime.quant.triton_int4") is not None

    @classmethod
    def from_dense(cls, dense: DenseExperts, group_size: int = 32) -> Int4Experts:
        packed = cls(dense.num_experts, dense.dim, dense.hidden_dim, group_size).to(dense.w13.device)
        for e in range(dense.num_experts):
            packed.w13_packed[e], packed.w13_scale[e] = pack_int4(dense.w13[e].detach(), group_size)
            packed.w2_packed[e], packed.w2_scale[e] = pack_int4(dense.w2[e].detach(), group_size)
        return packed


def quantize_experts_int4(model: nn.Module, group_size: int = 32, *, is_empty: bool = False) -> nn.Module:
    """Replace every MoE's dense routed experts by packed INT4 ones, in place.

    With `is_empty` the packed buffers are left zero (the loader fills them from an INT4
    checkpoint); otherwise the dense weights are quantized."""
    for module in model.modules():
        if isinstance(module, MoE) and isinstance(module.experts, DenseExperts):
            dense = module.experts
            if is_empty:
                with torch.device(dense.w13.device):  # meta while the loader builds the model
                    module.experts = Int4Experts(dense.num_experts, dense.dim, dense.hidden_dim, group_size)
            else:
                module.experts = Int4Experts.from_dense(dense, group_size)
    return model
