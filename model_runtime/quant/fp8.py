"""FP8 block-scaled weights (DeepSeek-V3, Kimi-K2-Instruct), dequantized at load.

`weight` is float8 e4m3 `[out, in]`, `weight_scale_inv` float32
`[ceil(out/bo), ceil(in/bi)]` (blocks of 128x128); the real weight is
weight * scale_inv of its block. Nothing stays in FP8: the runtime keeps the requested
dtype (an FP8 matmul path belongs with the GPU kernels).
"""

from __future__ import annotations

import torch

from model_runtime.errors import ShapeMismatchError


def dequantize_fp8_blocks(
    weight: torch.Tensor, scale_inv: torch.Tensor, block_size: tuple[int, int], dtype: torch.dtype, *, name: str = ""
) -> torch.Tensor:
    block_out, block_in = block_size
    out_dim, in_dim = weight.shape
    expected = (-(-out_dim // block_out), -(-in_dim // block_in))
    if tuple(scale_inv.shape) != expected:
        raise ShapeMismatchError(
            f"{name}.weight_scale_inv has shape {tuple(scale_inv.shape)}, "
            f"expected {expected} for weight {tuple(weight.shape)}"
        )
    if out_dim % block_out == 0 and in_dim % block_in == 0:  # the usual case: scale whole blocks in place
        blocks = weight.view(expected[0], block_out, expected[1], block_in).float()  # [O/bo, bo, I/bi, bi]
        return blocks.mul_(scale_inv.float()[:, None, :, None]).view(out_dim, in_dim).to(dtype)
    scale = scale_inv.float().repeat_interleave(block_out, 0)[:out_dim]  # [out, ceil(in/bi)]
    scale = scale.repeat_interleave(block_in, 1)[:, :in_dim]  # [out, in]
    return (weight.float() * scale).to(dtype)


def quantize_fp8_blocks(
    weight: torch.Tensor, block_size: tuple[int, int] = (128, 128)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse, for tests and tiny checkpoints: (e4m3 weight, float32 scale_inv)."""
    block_out, block_in = block_size
    out_dim, in_dim = weight.shape
    pad = torch.zeros(-(-out_dim // block_out) * block_out, -(-in_dim // block_in) * block_in)
    pad[:out_dim, :in_dim] = weight.float()
    blocks = pad.view(pad.shape[0] // block_out, block_out, pad.shape[1] // block_in, block_in)
    scale_inv = (blocks.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)  # [out/bo, in/bi]
    full = scale_inv.repeat_interleave(block_out, 0).repeat_interleave(block_in, 1)[:out_dim, :in_dim]
    return (weight.float() / full).to(torch.float8_e4m3fn), scale_inv
