"""Grouped W4A16 expert matmuls in Triton: every routed expert of a layer in one launch.

For CUDA (or Triton's CPU interpreter, which the tests use: `TRITON_INTERPRET=1` must be
set before triton is first imported). The weights stay in the compressed-tensors layout quant/int4.py keeps (`packed [E, O, K/8]`
int32, q + 8 in nibble j of word k for column 8k+j, lowest first; `scale [E, O, K/G]`
bf16); the kernel dequantizes a `[BLOCK_K, BLOCK_N]` tile in registers right before
each `tl.dot`, accumulating in float32, so no dequantized weight ever reaches memory.

Tokens reach the kernel as (token, expert) pairs, pair p = token * top_k + k. `align`
sorts the pairs by expert and pads each expert's run to whole `BLOCK_M` row blocks,
entirely on the device and with shapes fixed by N, K and E alone (no host sync, no
data-dependent sizes), so a decode step through it can be captured in a CUDA graph.
Blocks past the real ones carry expert -1 and return at once.

Importing this module imports triton: quant/int4.py imports it only for CUDA tensors.
Shapes: N tokens, K_top experts per token, P = N * K_top pairs, E experts, D hidden,
I moe_intermediate_size, G group size, M padded rows (whole blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton import knobs

from model_runtime.errors import ShapeMismatchError


@triton.jit
def _grouped_w4a16(
    a_ptr,  # [rows, K] activations; row of pair p = p // A_ROW_DIV
    b_ptr,  # [E, O, K/8] int32 packed weights
    s_ptr,  # [E, O, K/G] scales
    c_ptr,  # [P, O] output, pair order
    w_ptr,  # [P] float32 routing weights (read when MUL_WEIGHT)
    pair_ptr,  # [M] pair of each padded row; P on padding
    block_expert_ptr,  # [M / BLOCK_M] expert of each row block; -1 past the real blocks
    num_pairs,
    out_features,
    in_features,
    stride_a,
    stride_be,
    stride_bo,
    stride_se,
    stride_so,
    stride_c,
    A_ROW_DIV: tl.constexpr,
    GROUP: tl.constexpr,
    MUL_WEIGHT: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if expert < 0:
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(pair_ptr + offs_m)  # [BM]
    is_row = pair < num_pairs
    a_row = (pair // A_ROW_DIV).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    is_col = offs_n < out_features
    offs_k = tl.arange(0, BLOCK_K)  # [BK]
    a_ptrs = a_ptr + a_row[:, None] * stride_a + offs_k[None, :]  # [BM, BK]
    # Eight neighbouring k share a word and GROUP share a scale: the repeated addresses
    # are served from L1, so HBM sees each packed word and scale once.
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bo + (offs_k[:, None] // 8)  # [BK, BN]
    s_ptrs = s_ptr + expert * stride_se + offs_n[None, :] * stride_so + (offs_k[:, None] // GROUP)  # [BK, BN]
    shifts = (offs_k[:, None] % 8) * 4  # [BK, 1]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, in_features, BLOCK_K):  # in_features is a multiple of BLOCK_K
        a = tl.load(a_ptrs + k0, mask=is_row[:, None], other=0.0)  # [BM, BK]
        words = tl.load(b_ptrs + k0 // 8, mask=is_col[None, :], other=0)  # [BK, BN]
        scale = tl.load(s_ptrs + k0 // GROUP, mask=is_col[None, :], other=0.0)  # [BK, BN]
        q = ((words >> shifts) & 0xF) - 8  # [BK, BN] in -8..7
        w = (q.to(tl.float32) * scale.to(tl.float32)).to(a.dtype)  # [BK, BN], as unpack_int4 rounds it
        if DOT_FP32:  # float32 as float32 (not TF32); half values multiply exactly in it
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
    if MUL_WEIGHT:
        acc = acc * tl.load(w_ptr + pair, mask=is_row, other=0.0)[:, None]
    c_ptrs = c_ptr + pair.to(tl.int64)[:, None] * stride_c + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=is_row[:, None] & is_col[None, :])


def block_m_for(num_pairs: int, num_experts: int) -> int:
    """Rows per block: 16 (tl.dot's least) while experts get few rows each (decode), more for prefill."""
    rows_per_expert = num_pairs / num_experts
    return 16 if rows_per_expert <= 16 else 32 if rows_per_expert <= 32 else 64


def align(topk_idx: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs sorted by expert, each expert's run padded to whole blocks: (pair of each padded
    row `[M]`, P on padding; expert of each block `[M/BLOCK_M]`, -1 past the real ones).

    M is fixed by the shapes: each busy expert wastes less than one block, so at most
    ceil(P / BLOCK_M) + min(E, P) blocks are ever needed."""
    flat = topk_idx.flatten()  # [P]
    num_pairs, device = flat.numel(), flat.device
    num_blocks = -(-num_pairs // block_m) + min(num_experts, num_pairs)
    # scatter_add, not bincount: bincount syncs with the host on CUDA.
    counts = torch.zeros(num_experts, dtype=torch.long, device=device).scatter_add_(0, flat, torch.ones_like(flat))  # [E]
    blocks_of = (counts + block_m - 1) // block_m  # [E]
    block_end = blocks_of.cumsum(0)  # [E] first block after each expert's
    order = flat.argsort(stable=True)  # [P] pairs grouped by expert
    expert_sorted = flat.index_select(0, order)  # [P]
    first_pair = counts.cumsum(0) - counts  # [E]
    rank = torch.arange(num_pairs, device=device) - first_pair.index_select(0, expert_sorted)  # [P] row within its expert
    dest = (block_end - blocks_of).index_select(0, expert_sorted) * block_m + rank  # [P] padded row of each pair
    pair_of_row = torch.full((num_blocks * block_m,), num_pairs, dtype=torch.long, device=device).index_copy_(0, dest, order)  # [M]
    block_idx = torch.arange(num_blocks, device=device)  # [M/BM]
    block_expert = torch.searchsorted(block_end, block_idx, right=True)  # [M/BM] E past the real blocks
    block_expert = torch.where(block_expert < num_experts, block_expert, -1).to(torch.int32)
    return pair_of_row.to(torch.int32), block_expert


def grouped_w4a16(
    a: torch.Tensor,  # [rows, K]
    packed: torch.Tensor,  # [E, O, K/8]
    scale: torch.Tensor,  # [E, O, K/G]
    pair_of_row: torch.Tensor,  # [M]
    block_expert: torch.Tensor,  # [M/BM]
    num_pairs: int,
    *,
    a_row_div: int,
    block_m: int,
    routing_weights: torch.Tensor | None = None,  # [P] float32
) -> torch.Tensor:  # [P, O]
    """Pair p's row of a (row p // a_row_div) times its expert's dequantized weight, transposed."""
    num_experts, out_features, words = packed.shape
    in_features = words * 8
    group = in_features // scale.shape[-1]
    # At most 64: the [BLOCK_K, BLOCK_N] tiles of words and scales are loaded whole (each
    # word 8 times over), and three pipeline stages of them must fit shared memory.
    block_k = next((b for b in (64, 32) if in_features % b == 0 and b % group == 0), None)
    if block_k is None:
        raise ShapeMismatchError(f"in features {in_features} and group {group} fit no K block of 32 or 64")
    a = a.contiguous()
    out = torch.empty(num_pairs, out_features, dtype=a.dtype, device=a.device)  # [P, O]
    block_n = 64 if out_features >= 64 else 32
    grid = (block_expert.numel(), triton.cdiv(out_features, block_n))
    weights = routing_weights if routing_weights is not None else out  # unread unless MUL_WEIGHT
    _grouped_w4a16[grid](
        a, packed, scale, out, weights, pair_of_row, block_expert,
        num_pairs, out_features, in_features,
        a.stride(0), packed.stride(0), packed.stride(1), scale.stride(0), scale.stride(1), out.stride(0),
        A_ROW_DIV=a_row_div, GROUP=group, MUL_WEIGHT=routing_weights is not None,
        # Triton 3.9's interpreter multiplies bf16 tiles as their raw uint16 bits.
        DOT_FP32=a.dtype == torch.float32 or (bool(knobs.runtime.interpret) and a.dtype == torch.bfloat16),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=4, num_stages=3,
    )  # fmt: skip
    return out


def int4_moe(
    x: torch.Tensor,  # [N, D]
    topk_idx: torch.Tensor,  # [N, K_top]
    topk_w: torch.Tensor,  # [N, K_top]
    w13_packed: torch.Tensor,  # [E, 2I, D/8]
    w13_scale: torch.Tensor,  # [E, 2I, D/G]
    w2_packed: torch.Tensor,  # [E, D, I/8]
    w2_scale: torch.Tensor,  # [E, D, I/G]
) -> torch.Tensor:  # [N, D]
    """The routed experts' weighted sum per token, as `RoutedExperts.forward` computes it."""
    num_tokens, top_k = topk_idx.shape
    if num_tokens == 0:
        return torch.zeros_like(x)  # [0, D]
    num_pairs, num_experts = num_tokens * top_k, w13_packed.shape[0]
    block_m = block_m_for(num_pairs, num_experts)
    pair_of_row, block_expert = align(topk_idx, num_experts, block_m)
    gate_up = grouped_w4a16(x, w13_packed, w13_scale, pair_of_row, block_expert, num_pairs, a_row_div=top_k, block_m=block_m)  # [P, 2I]
    gate, up = gate_up.chunk(2, dim=-1)  # [P, I] each
    weights = topk_w.flatten().float()  # [P]
    down = grouped_w4a16(F.silu(gate) * up, w2_packed, w2_scale, pair_of_row, block_expert, num_pairs, a_row_div=1, block_m=block_m, routing_weights=weights)  # [P, D]
    return down.view(num_tokens, top_k, -1).sum(1)  # [N, D]
