"""Paged MLA decode in Triton: each sequence's latent cache read once per layer and step.

For CUDA (or Triton's CPU interpreter, which the tests use: `TRITON_INTERPRET=1` must be
set before triton is first imported). One program per (sequence, block of heads) walks
the sequence's context `BLOCK_N` positions at a time: it gathers those positions' cache
rows (`[BLOCK_N, C + R]`, each through the block table: position p lives in block
`decode_blocks[s, p // B]`, slot `p % B`, so any block size works), scores them against
its heads' queries (`[q_latent | q_pe] . row * softmax_scale + decode_bias`), keeps an
online softmax in float32 and accumulates `p * row[:C]` from the same loaded rows. The
torch path (`PagedLatentAttention._decode`) instead copies the context out with
index_select and reads the copy twice.

It reads only `decode_blocks` and `decode_bias` from the batch, grid and loop bounds come
from their shapes, and nothing syncs with the host, so a decode step through it can be
captured in a CUDA graph. Chunks whose bias is -inf throughout (padding past a
sequence's end, the graphs' padded blocks) are skipped without loading the cache.

Importing this module imports triton: engine/paged_attention.py imports it only for
CUDA tensors.
Shapes: S sequences, H heads, C kv_lora_rank, R rope dim, nb context blocks of B slots,
L = nb * B context positions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton import knobs

from model_runtime.errors import ShapeMismatchError


@triton.jit
def _paged_mla_decode(
    q_ptr,  # [S, H, C + R]
    cache_ptr,  # [num_blocks, B, C + R], rows contiguous within a block
    blocks_ptr,  # [S, nb] block tables
    bias_ptr,  # [S, 1, L] 0 on context, -inf on padding
    out_ptr,  # [S, H, C]
    num_heads,
    context_len,  # L
    softmax_scale,
    stride_qs,
    stride_qh,
    stride_cb,
    stride_bs,
    stride_bias,
    stride_os,
    stride_oh,
    BLOCK_SIZE: tl.constexpr,  # B
    LATENT: tl.constexpr,  # C
    ROPE: tl.constexpr,  # R
    DOT_FP32: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # [BH]
    is_head = offs_h < num_heads
    offs_c = tl.arange(0, BLOCK_C)  # [BC]
    offs_r = tl.arange(0, BLOCK_R)  # [BR]
    is_c = offs_c < LATENT
    is_r = offs_r < ROPE
    q_rows = q_ptr + seq * stride_qs + offs_h[:, None] * stride_qh  # [BH, 1]
    q_lat = tl.load(q_rows + offs_c[None, :], mask=is_head[:, None] & is_c[None, :], other=0.0)  # [BH, BC]
    q_pe = tl.load(q_rows + LATENT + offs_r[None, :], mask=is_head[:, None] & is_r[None, :], other=0.0)  # [BH, BR]
    if DOT_FP32:
        q_lat = q_lat.to(tl.float32)
        q_pe = q_pe.to(tl.float32)
    # A finite floor, not -inf: a row whose chunks so far were all masked keeps exp() at 0, not NaN.
    m_i = tl.full((BLOCK_H,), -1.0e30, dtype=tl.float32)  # [BH] running max
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)  # [BH] running sum of exp
    acc = tl.zeros((BLOCK_H, BLOCK_C), dtype=tl.float32)  # [BH, BC]
    offs_n = tl.arange(0, BLOCK_N)  # [BN]
    for start in range(0, context_len, BLOCK_N):
        pos = start + offs_n  # [BN]
        is_pos = pos < context_len
        bias = tl.load(bias_ptr + seq * stride_bias + pos, mask=is_pos, other=float("-inf")).to(tl.float32)  # [BN]
        if tl.max(bias, axis=0) > float("-inf"):
            block = tl.load(blocks_ptr + seq * stride_bs + pos // BLOCK_SIZE, mask=is_pos, other=0).to(tl.int64)  # [BN]
            rows = cache_ptr + block[:, None] * stride_cb + (pos % BLOCK_SIZE)[:, None] * (LATENT + ROPE)  # [BN, 1]
            k_lat = tl.load(rows + offs_c[None, :], mask=is_pos[:, None] & is_c[None, :], other=0.0)  # [BN, BC] read once:
            k_pe = tl.load(rows + LATENT + offs_r[None, :], mask=is_pos[:, None] & is_r[None, :], other=0.0)  # [BN, BR] keys and values
            if DOT_FP32:  # float32 as float32 (not TF32)
                k_lat = k_lat.to(tl.float32)
                k_pe = k_pe.to(tl.float32)
                scores = tl.dot(q_lat, tl.trans(k_lat), input_precision="ieee")  # [BH, BN]
                scores = tl.dot(q_pe, tl.trans(k_pe), scores, input_precision="ieee")
            else:
                scores = tl.dot(q_lat, tl.trans(k_lat))  # [BH, BN]
                scores = tl.dot(q_pe, tl.trans(k_pe), scores)
            scores = scores * softmax_scale + bias[None, :]  # [BH, BN]
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # [BH]
            alpha = tl.exp(m_i - m_new)  # [BH]
            p = tl.exp(scores - m_new[:, None])  # [BH, BN]
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if DOT_FP32:
                acc = tl.dot(p, k_lat, acc * alpha[:, None], input_precision="ieee")  # [BH, BC]
            else:
                acc = tl.dot(p.to(k_lat.dtype), k_lat, acc * alpha[:, None])  # [BH, BC]
            m_i = m_new
    out = acc / l_i[:, None]  # [BH, BC]
    out_ptrs = out_ptr + seq * stride_os + offs_h[:, None] * stride_oh + offs_c[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=is_head[:, None] & is_c[None, :])


def paged_mla_decode(
    q: torch.Tensor,  # [S, H, C + R]
    blocks: torch.Tensor,  # [num_blocks, B * (C + R)] one layer's cache, a row per block
    decode_blocks: torch.Tensor,  # [S, nb]
    decode_bias: torch.Tensor,  # [S, 1, nb * B]
    softmax_scale: float,
    num_latent: int,
    *,
    block_n: int = 32,
) -> torch.Tensor:  # [S, H, C]
    """softmax(q . keys * scale + bias) @ keys[..., :C] per sequence, as `_decode` computes it."""
    num_seqs, num_heads, width = q.shape
    context_len = decode_bias.shape[-1]
    block_size = blocks.shape[-1] // width
    if block_size * width != blocks.shape[-1] or decode_blocks.shape != (num_seqs, context_len // block_size):
        raise ShapeMismatchError(f"cache rows {tuple(blocks.shape)}, block tables {tuple(decode_blocks.shape)} and bias {tuple(decode_bias.shape)} disagree for query width {width}")
    if blocks.stride(-1) != 1 or decode_bias.stride(-1) != 1 or decode_blocks.stride(-1) != 1:
        raise ShapeMismatchError("cache, bias and block tables must be contiguous along their last dim")
    q = q.contiguous()
    out = torch.empty(num_seqs, num_heads, num_latent, dtype=q.dtype, device=q.device)  # [S, H, C]
    if blocks.dtype != q.dtype:
        raise ShapeMismatchError(f"cache dtype {blocks.dtype} is not the query's {q.dtype}")
    # tl.dot wants every side at least 16: 16 heads a program (fewer masked), C and R padded to 16.
    block_h = 16
    grid = (num_seqs, triton.cdiv(num_heads, block_h))
    _paged_mla_decode[grid](
        q, blocks, decode_blocks, decode_bias, out,
        num_heads, context_len, softmax_scale,
        q.stride(0), q.stride(1), blocks.stride(0), decode_blocks.stride(0), decode_bias.stride(0), out.stride(0), out.stride(1),
        BLOCK_SIZE=block_size, LATENT=num_latent, ROPE=width - num_latent,
        # Triton 3.9's interpreter multiplies bf16 tiles as their raw uint16 bits.
        DOT_FP32=q.dtype == torch.float32 or (bool(knobs.runtime.interpret) and q.dtype == torch.bfloat16),
        BLOCK_H=block_h, BLOCK_N=block_n,
        BLOCK_C=max(16, triton.next_power_of_2(num_latent)), BLOCK_R=max(16, triton.next_power_of_2(width - num_latent)),
        num_warps=4,
    )  # fmt: skip
    return out
