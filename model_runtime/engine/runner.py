"""The model runner: turns a scheduled step into tensors, runs the model, samples.

It owns the model, the paged latent cache and the sampler. It knows nothing of
queues or stopping; the scheduler decides, the runner computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_runtime.engine.paged_attention import PagedBatch, PagedLatentAttention, PrefillGroup
from model_runtime.engine.sampler import Sampler
from model_runtime.engine.scheduler import ScheduledSeq


@dataclass(frozen=True)
class CacheShape:
    num_layers: int
    num_blocks: int
    block_size: int
    entry_dim: int  # kv_lora_rank + qk_rope_head_dim

    @property
    def bytes_per_block(self) -> int:
        return self.num_layers * self.block_size * self.entry_dim


class ModelRunner:
    def __init__(self, model: torch.nn.Module, cache: CacheShape, *, dtype: torch.dtype, device: torch.device, seed: int | None = None) -> None:
        self.model = model
        self.vocab_size: int | None = getattr(getattr(model, "config", None), "vocab_size", None)
        self.block_size = cache.block_size
        self.device = device
        self.dtype = dtype
        kv_cache = torch.zeros(cache.num_layers, cache.num_blocks, cache.block_size, cache.entry_dim, dtype=dtype, device=device)  # [layers, blocks, B, C + R]
        self.attention = PagedLatentAttention(kv_cache)
        self.sampler = Sampler(device, seed)

    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSeq]) -> list[int]:
        """Computes one step; returns the sampled token of each sampled sequence, in order."""
        input_ids, positions, batch, logits_indices = self._prepare(scheduled)
        self.attention.set_batch(batch)
        if not logits_indices:
            self.model.forward_tokens(input_ids, positions, self.attention, logits_indices=input_ids.new_zeros(0))
            return []
        indices = torch.tensor(logits_indices, device=self.device)  # [M]
        logits = self.model.forward_tokens(input_ids, positions, self.attention, logits_indices=indices)  # [M, V]
        sampled = [s.seq for s in scheduled if s.is_sampled]
        return self.sampler(logits, [s.seq_id for s in sampled], [s.params for s in sampled])

    def _prepare(self, scheduled: list[ScheduledSeq]) -> tuple[torch.Tensor, torch.Tensor, PagedBatch, list[int]]:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_indices: list[int] = []
        decodes: list[tuple[int, ScheduledSeq]] = []  # (token index, item)
        prefills: list[PrefillGroup] = []
        for item in scheduled:
            seq, start, end = item.seq, item.start, item.start + item.num_new_tokens
            token_start = len(input_ids)
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(_slots(seq.block_table, bs, start, end))
            if item.is_sampled:
                logits_indices.append(len(input_ids) - 1)
            if item.num_new_tokens == 1:
                decodes.append((token_start, item))
                continue
            query_pos = torch.arange(start, end, device=self.device)  # [n]
            is_future = torch.arange(end, device=self.device)[None, :] > query_pos[:, None]  # [n, L]
            prefills.append(
                PrefillGroup(
                    token_start,
                    len(input_ids),
                    torch.tensor(_slots(seq.block_table, bs, 0, end), device=self.device),  # [L]
                    torch.zeros(is_future.shape, dtype=self.dtype, device=self.device).masked_fill_(is_future, float("-inf"))[:, None, :],  # [n, 1, L]
                )
            )
        batch = PagedBatch(
            slot_mapping=torch.tensor(slots, device=self.device),  # [N]
            prefills=tuple(prefills),
            is_all_decode=not prefills,
            **self._decode_batch(decodes),
        )
        ids = torch.tensor(input_ids, dtype=torch.long, device=self.device)  # [N]
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)  # [N]
        return ids, pos, batch, logits_indices

    def _decode_batch(self, decodes: list[tuple[int, ScheduledSeq]]) -> dict[str, torch.Tensor]:
        """Context slots of every decoding sequence, padded, from their block tables."""
        bs, device = self.block_size, self.device
        lens = [item.start + 1 for _, item in decodes]
        max_len = max(lens, default=0)
        max_blocks = -(-max_len // bs)
        tables = torch.tensor([item.seq.block_table[:max_blocks] + [0] * (max_blocks - len(item.seq.block_table[:max_blocks])) for _, item in decodes], dtype=torch.long, device=device).view(len(decodes), max_blocks)  # [S, nb]
        context_slots = (tables[:, :, None] * bs + torch.arange(bs, device=device)).view(len(decodes), max_blocks * bs)[:, :max_len]  # [S, L]
        is_pad = torch.arange(max_len, device=device)[None, :] >= torch.tensor(lens, dtype=torch.long, device=device)[:, None]  # [S, L]
        return {
            "decode_token_indices": torch.tensor([i for i, _ in decodes], dtype=torch.long, device=device),  # [S]
            "decode_context_slots": context_slots,
            "decode_bias": torch.zeros(is_pad.shape, dtype=self.dtype, device=device).masked_fill_(is_pad, float("-inf"))[:, None, :],  # [S, 1, L]
        }


def _slots(block_table: list[int], block_size: int, start: int, end: int) -> list[int]:
    """Flat cache slots of positions start..end-1."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]
