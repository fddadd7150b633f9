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
    query_positions: torch.Tensor  # [n]


@dataclass(frozen=True)
class PagedBatch:
    slot_mapping: torch.Tensor  # [N] flat cache slot of each new token
    decode_token_indices: torch.Tensor  # [S_d] the one new token of each decoding sequence
    decode_context_slots: torch.Tensor  # [S_d, L_max] padded with slot 0
    decode_context_lens: torch.Tensor  # [S_d]
    prefills: tuple[PrefillGroup, ...]


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
        if batch.decode_token_indices.numel():
            keys = cache[batch.decode_context_slots].to(query.dtype)  # [S, L, C + R]
            q = query[batch.decode_token_indices]  # [S, H, C + R]
            scores = torch.einsum("shd,sld->shl", q, keys) * softmax_scale  # [S, H, L]
            max_len = keys.shape[1]
            is_pad = torch.arange(max_len, device=keys.device)[None, :] >= batch.decode_context_lens[:, None]  # [S, L]
            scores = scores.masked_fill(is_pad[:, None, :], float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)  # [S, H, L]
            out[batch.decode_token_indices] = torch.einsum("shl,slc->shc", probs, keys[..., :num_latent])  # [S, H, C]
        for group in batch.prefills:
            keys = cache[group.context_slots].to(query.dtype)  # [L, C + R]
            q = query[group.token_start : group.token_end]  # [n, H, C + R]
            scores = torch.einsum("nhd,ld->nhl", q, keys) * softmax_scale  # [n, H, L]
            is_future = torch.arange(keys.shape[0], device=keys.device)[None, :] > group.query_positions[:, None]  # [n, L]
            scores = scores.masked_fill(is_future[:, None, :], float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)  # [n, H, L]
            out[group.token_start : group.token_end] = torch.einsum("nhl,lc->nhc", probs, keys[:, :num_latent])  # [n, H, C]
        return out
