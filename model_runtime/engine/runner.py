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
        decode_rows: list[tuple[int, list[int]]] = []  # (token index, context slots)
        prefills: list[PrefillGroup] = []
        for item in scheduled:
            seq, start, end = item.seq, item.start, item.start + item.num_new_tokens
            token_start = len(input_ids)
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            context = _slots(seq.block_table, bs, end)
            slots.extend(context[start:end])
            if item.is_sampled:
                logits_indices.append(len(input_ids) - 1)
            if item.num_new_tokens == 1:
                decode_rows.append((token_start, context))
            else:
                prefills.append(
                    PrefillGroup(
                        token_start,
                        len(input_ids),
                        torch.tensor(context, device=self.device),  # [L]
                        torch.arange(start, end, device=self.device),  # [n]
                    )
                )
        max_len = max((len(c) for _, c in decode_rows), default=0)
        batch = PagedBatch(
            slot_mapping=torch.tensor(slots, device=self.device),  # [N]
            decode_token_indices=torch.tensor([i for i, _ in decode_rows], dtype=torch.long, device=self.device),  # [S]
            decode_context_slots=torch.tensor([c + [0] * (max_len - len(c)) for _, c in decode_rows], dtype=torch.long, device=self.device).view(len(decode_rows), max_len),  # [S, L]
            decode_context_lens=torch.tensor([len(c) for _, c in decode_rows], dtype=torch.long, device=self.device),  # [S]
            prefills=tuple(prefills),
        )
        ids = torch.tensor(input_ids, dtype=torch.long, device=self.device)  # [N]
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)  # [N]
        return ids, pos, batch, logits_indices


def _slots(block_table: list[int], block_size: int, num_tokens: int) -> list[int]:
    """Flat cache slots of positions 0..num_tokens-1."""
    slots: list[int] = []
    for block in block_table[: -(-num_tokens // block_size)]:
        base = block * block_size
        slots.extend(range(base, base + block_size))
    return slots[:num_tokens]
