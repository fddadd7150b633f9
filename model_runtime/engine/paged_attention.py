"""The paged latent-attention backend: MLA's absorbed attention over a block-paged cache.

The cache holds, per layer, `[num_blocks, block_size, C + R]`: the compressed latent
and the rotary key part of every token, never expanded keys and values. Before each
forward the runner calls `set_batch` with a `PagedBatch` saying, for each of the N
flat tokens, where its latent goes (`slot_mapping`) and, per sequence, which blocks
hold its context. The batch is built once per step and read by every layer. Context
is gathered a whole block at a time (one row of `block_size * (C + R)` values per
block, not one per token). Sequences that bring one query token (decodes) are attended
together in one padded batch; sequences that bring several (prefill chunks) one at a
time, so no step pads a long prefill against short decodes. On CUDA, when triton
imports, decodes go through a Triton kernel (engine/triton_mla.py) that reads each
context row once; on CPU in float32, where a C compiler builds it, through a C kernel
(model_runtime/cpu_kernels.py) that reads each sequence's own context in place; elsewhere
through index_select and two batched matmuls over the padded context.

The C kernel wants each block transposed, `[C + R, B]` (`is_block_transposed`: the
runner allocates the cache so when it has the kernel): row d holds coordinate d of the
block's B tokens. New entries are then scattered coordinate by coordinate, and a
prefill's context is transposed back as it is gathered.

Shapes: N new tokens, H heads, C kv_lora_rank, R rope dim, S sequences, L context
(padded to whole blocks: nb blocks of B slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_runtime.cpu_kernels import DecodeKernel
from model_runtime.triton_kernels import triton_module


@dataclass(frozen=True)
class PrefillGroup:
    """One sequence bringing several new tokens."""

    token_start: int
    token_end: int
    num_context: int  # L: cached tokens before the chunk plus its new ones
    context_blocks: torch.Tensor  # [nb] cache blocks of positions 0..L-1
    causal_bias: torch.Tensor  # [n, 1, nb*B] 0 up to each query's position, -inf after


@dataclass(frozen=True)
class PagedBatch:
    slot_mapping: torch.Tensor  # [N] flat cache slot of each new token
    decode_token_indices: torch.Tensor  # [S_d] the one new token of each decoding sequence
    decode_blocks: torch.Tensor  # [S_d, nb] block tables, padded with block 0
    decode_bias: torch.Tensor  # [S_d, 1, nb*B] 0 where a context token is, -inf on padding
    prefills: tuple[PrefillGroup, ...]
    is_all_decode: bool  # decode rows are exactly the N tokens, in order: no indexing
    decode_lens: torch.Tensor | None = None  # [S_d] context tokens of each decoding sequence (the C kernel's bounds)


class PagedLatentAttention:
    """Implements `model_runtime.layers.mla.LatentAttention` over a paged cache."""

    def __init__(self, kv_cache: torch.Tensor, *, query_block: int = 64, decode_kernel: DecodeKernel | None = None) -> None:
        """`decode_kernel` (model_runtime/cpu_kernels.py): decodes through it, the cache's blocks
        transposed, `kv_cache` `[layers, num_blocks, C + R, block_size]`; without it
        `[layers, num_blocks, block_size, C + R]`."""
        self.kv_cache = kv_cache
        self.query_block = query_block  # prefill queries attended together
        self.decode_kernel = decode_kernel
        self.is_block_transposed = decode_kernel is not None
        self.batch: PagedBatch | None = None
        self._entry_index: torch.Tensor | None = None  # [N * (C + R)] flat cache index of each new value (transposed blocks)

    def set_batch(self, batch: PagedBatch) -> None:
        self.batch = batch
        if self.is_block_transposed:  # where each coordinate of each new entry goes, for every layer
            _, _, dim, block_size = self.kv_cache.shape
            block, offset = batch.slot_mapping.div(block_size, rounding_mode="floor"), batch.slot_mapping.remainder(block_size)
            coordinate = torch.arange(dim, device=block.device) * block_size  # [C + R]
            self._entry_index = ((block * (dim * block_size) + offset)[:, None] + coordinate[None, :]).view(-1)  # [N * (C + R)]

    def __call__(
        self,
        layer_idx: int,
        q_latent: torch.Tensor,  # [N, H, C]
        q_pe: torch.Tensor,  # [N, H, R]
        kv_latent: torch.Tensor,  # [N, C]
        k_pe: torch.Tensor,  # [N, R]
        softmax_scale: float,
    ) -> torch.Tensor:  # [N, H, C]
        batch = self.batch
        assert batch is not None, "set_batch() before the forward"
        num_latent = kv_latent.shape[-1]
        layer = self.kv_cache[layer_idx]  # [num_blocks, B, C + R], or [num_blocks, C + R, B] transposed
        entry = torch.cat([kv_latent, k_pe], dim=-1).to(layer.dtype)  # [N, C + R]
        if self.is_block_transposed:
            assert self._entry_index is not None, "set_batch() before the forward"
            layer.view(-1).index_copy_(0, self._entry_index, entry.view(-1))
        else:
            layer.view(-1, layer.shape[-1]).index_copy_(0, batch.slot_mapping, entry)
        blocks = layer.view(layer.shape[0], -1)  # [num_blocks, B * (C + R)]
        query = torch.cat([q_latent, q_pe], dim=-1)  # [N, H, C + R]
        if batch.is_all_decode:
            return self._decode_any(query, blocks, batch, softmax_scale, num_latent)  # [N, H, C]
        out = torch.empty_like(q_latent)  # [N, H, C]
        if batch.decode_token_indices.numel():
            q = query.index_select(0, batch.decode_token_indices)  # [S, H, C + R]
            out.index_copy_(0, batch.decode_token_indices, self._decode_any(q, blocks, batch, softmax_scale, num_latent))
        for group in batch.prefills:
            keys = blocks.index_select(0, group.context_blocks)  # [nb, B * (C + R)]
            if self.is_block_transposed:
                keys = keys.view(keys.shape[0], query.shape[-1], -1).transpose(1, 2)  # [nb, B, C + R]
            keys = keys.reshape(-1, query.shape[-1]).to(query.dtype)  # [L, C + R]
            num_new = group.token_end - group.token_start
            # Queries a block at a time, each against the keys up to its last position only:
            # a long prompt skips most of the causal mask's upper triangle.
            for first in range(0, num_new, self.query_block):
                last = min(num_new, first + self.query_block)
                num_keys = group.num_context - num_new + last
                rows = slice(group.token_start + first, group.token_start + last)
                scores = torch.matmul(query[rows], keys[:num_keys].T) * softmax_scale + group.causal_bias[first:last, :, :num_keys]  # [q, H, K]
                probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)  # [q, H, K]
                out[rows] = torch.matmul(probs, keys[:num_keys, :num_latent])  # [q, H, C]
        return out

    def _decode_any(self, q: torch.Tensor, blocks: torch.Tensor, batch: PagedBatch, softmax_scale: float, num_latent: int) -> torch.Tensor:
        if self.decode_kernel is not None:
            assert batch.decode_lens is not None, "the C kernel needs the decodes' context lengths"
            return self.decode_kernel(q, blocks, batch.decode_blocks, batch.decode_lens, softmax_scale)  # [S, H, C]
        return self._decode(q, blocks, batch, softmax_scale, num_latent)

    @staticmethod
    def _decode(q: torch.Tensor, blocks: torch.Tensor, batch: PagedBatch, softmax_scale: float, num_latent: int) -> torch.Tensor:
        kernels = triton_module("model_runtime.engine.triton_mla") if q.is_cuda else None
        if kernels is not None:
            return kernels.paged_mla_decode(q, blocks, batch.decode_blocks, batch.decode_bias, softmax_scale, num_latent)  # [S, H, C]
        num_seqs = batch.decode_blocks.shape[0]
        keys = blocks.index_select(0, batch.decode_blocks.view(-1)).view(num_seqs, -1, q.shape[-1]).to(q.dtype)  # [S, L, C + R]
        scores = torch.baddbmm(batch.decode_bias, q, keys.transpose(1, 2), alpha=softmax_scale)  # [S, H, L]
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # [S, H, L]
        return torch.bmm(probs, keys[..., :num_latent])  # [S, H, C]
