"""The paged latent-attention backend: MLA's absorbed attention over a block-paged cache.

The cache holds, per layer, `[num_blocks, block_size, C + R]`: the compressed latent
and the rotary key part of every token, never expanded keys and values. Before each
forward the runner calls `set_batch` with a `PagedBatch` saying, for each of the N
flat tokens, where its latent goes (`slot_mapping`) and, per sequence, where its
context lives. Sequences that bring one query token (decodes) are attended together
in one padded batch; sequences that bring several (prefill chunks) one at a time, so
no step pads a long prefill against short decodes.

Shapes: N new tokens, H heads, C kv_lora_rank, R rope dim, S sequences, L context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefillGroup:
    """One sequence bringing several new tokens."""

    token_start: int
    token_end: int
    context_slots: torch.Tensor  # [L] cache slots of positions 0..L-1
    causal_bias: torch.Tensor  # [n, 1, L] 0 up to each query's position, -inf after


@dataclass(frozen=True)
class PagedBatch:
    slot_mapping: torch.Tensor  # [N] flat cache slot of each new token
    decode_token_indices: torch.Tensor  # [S_d] the one new token of each decoding sequence
    decode_context_slots: torch.Tensor  # [S_d, L_max] padded with slot 0
    decode_bias: torch.Tensor  # [S_d, 1, L_max] 0 where a context token is, -inf on padding
    prefills: tuple[PrefillGroup, ...]
    is_all_decode: bool  # decode rows are exactly the N tokens, in order: no indexing


class PagedLatentAttention:
    """Implements `model_runtime.layers.mla.LatentAttention` over a paged cache."""

    def __init__(self, kv_cache: torch.Tensor) -> None:
        self.kv_cache = kv_cache  # [layers, num_blocks, block_size, C + R]
        self.batch: PagedBatch | None = None

    def set_batch(self, batch: PagedBatch) -> None:
        self.batch = batch

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
        cache = self.kv_cache[layer_idx].view(-1, self.kv_cache.shape[-1])  # [slots, C + R]
        cache[batch.slot_mapping] = torch.cat([kv_latent, k_pe], dim=-1).to(cache.dtype)  # [N, C + R]
        query = torch.cat([q_latent, q_pe], dim=-1)  # [N, H, C + R]
        out = torch.empty_like(q_latent)  # [N, H, C]
        if batch.is_all_decode:
            return self._decode(query, cache, batch, softmax_scale, num_latent)  # [N, H, C]
        if batch.decode_token_indices.numel():
            q = query[batch.decode_token_indices]  # [S, H, C + R]
            out[batch.decode_token_indices] = self._decode(q, cache, batch, softmax_scale, num_latent)  # [S, H, C]
        for group in batch.prefills:
            keys = cache.index_select(0, group.context_slots).to(query.dtype)  # [L, C + R]
            q = query[group.token_start : group.token_end]  # [n, H, C + R]
            scores = torch.matmul(q, keys.T) * softmax_scale + group.causal_bias  # [n, H, L]
            probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)  # [n, H, L]
            out[group.token_start : group.token_end] = torch.matmul(probs, keys[:, :num_latent])  # [n, H, C]
        return out

    @staticmethod
    def _decode(q: torch.Tensor, cache: torch.Tensor, batch: PagedBatch, softmax_scale: float, num_latent: int) -> torch.Tensor:
        slots = batch.decode_context_slots  # [S, L]
        keys = cache.index_select(0, slots.reshape(-1)).view(*slots.shape, cache.shape[-1]).to(q.dtype)  # [S, L, C + R]
        scores = torch.baddbmm(batch.decode_bias, q, keys.transpose(1, 2), alpha=softmax_scale)  # [S, H, L]
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # [S, H, L]
        return torch.bmm(probs, keys[..., :num_latent])  # [S, H, C]
