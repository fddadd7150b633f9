"""The model runner: turns a scheduled step into tensors, runs the model, samples.

It owns the model, the paged latent cache and the sampler. It knows nothing of
queues or stopping; the scheduler decides, the runner computes. On CUDA, decode-only
steps replay CUDA graphs (engine/cuda_graphs.py) unless `enforce_eager`; prefill,
mixed steps and CPU run eagerly.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import torch

from model_runtime import cpu_kernels
from model_runtime.cpu_kernels import DecodeKernel
from model_runtime.engine.cuda_graphs import DecodeGraphs, can_capture
from model_runtime.engine.paged_attention import PagedBatch, PagedLatentAttention, PrefillGroup
from model_runtime.engine.sampler import Sampler
from model_runtime.engine.scheduler import ScheduledSeq
from model_runtime.layers.mla import MultiHeadLatentAttention


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
    def __init__(self, model: torch.nn.Module, cache: CacheShape, *, dtype: torch.dtype, device: torch.device, seed: int | None = None, enforce_eager: bool = False) -> None:
        self.model = model
        fuse = getattr(model, "fuse_for_inference", None)
        if fuse is not None:
            fuse()  # fewer operations per step (models/deepseek_v3.py)
        self.vocab_size: int | None = getattr(getattr(model, "config", None), "vocab_size", None)
        self.block_size = cache.block_size
        self.device = device
        self.dtype = dtype
        is_graphed = not enforce_eager and can_capture(model, device)
        num_blocks = cache.num_blocks + int(is_graphed)  # graphs' padding rows write the extra block
        kernel = None if is_graphed else _cpu_decode_kernel(model, cache, dtype, device)
        if kernel is not None:  # its blocks are transposed (engine/paged_attention.py)
            kv_cache = torch.zeros(cache.num_layers, num_blocks, cache.entry_dim, cache.block_size, dtype=dtype, device=device)  # [layers, blocks, C + R, B]
        else:
            kv_cache = torch.zeros(cache.num_layers, num_blocks, cache.block_size, cache.entry_dim, dtype=dtype, device=device)  # [layers, blocks, B, C + R]
        self.attention = PagedLatentAttention(kv_cache, decode_kernel=kernel)
        self._line: torch.Tensor | None = None  # see _mask_line
        self.sampler = Sampler(device, seed)
        self.graphs = DecodeGraphs(model, self.attention, scratch_block=cache.num_blocks, dtype=dtype, device=device) if is_graphed else None

    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSeq]) -> list[int]:
        """Computes one step; returns the sampled tokens, `num_sampled` per scheduled
        sequence, in order (a drafted sequence's: the model's token after each of its rows)."""
        input_ids, positions, batch, logits_indices = self._prepare(scheduled)
        rows = [s.seq for s in scheduled for _ in range(s.num_sampled)]
        request_ids, params = [seq.seq_id for seq in rows], [seq.params for seq in rows]
        is_decode_only = batch.is_all_decode and len(logits_indices) == len(input_ids) > 0
        shape = self.graphs.padded_shape(*batch.decode_blocks.shape) if self.graphs and is_decode_only else None
        if shape is not None:
            logits = self.graphs.run(input_ids, positions, batch, shape)  # [S, V]
            return self.sampler(logits, request_ids, params)
        self.attention.set_batch(batch)
        if not logits_indices:
            self.model.forward_tokens(input_ids, positions, self.attention, logits_indices=input_ids.new_zeros(0))
            return []
        # Every token sampled (a decode-only step): all rows, no gather.
        indices = None if len(logits_indices) == len(input_ids) else torch.tensor(logits_indices, device=self.device)  # [M]
        logits = self.model.forward_tokens(input_ids, positions, self.attention, logits_indices=indices)  # [M, V]
        return self.sampler(logits, request_ids, params)

    def _prepare(self, scheduled: list[ScheduledSeq]) -> tuple[torch.Tensor, torch.Tensor, PagedBatch, list[int]]:
        """The step's flat tokens and the attention metadata every layer reads, built once.
        A drafted sequence's tokens are decode rows, each seeing the context up to itself
        (every row's latent is written to the cache before any row attends)."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logits_indices: list[int] = []
        decode_indices: list[int] = []
        decode_rows: list[tuple[list[int], int]] = []  # (block table, context length)
        prefills: list[PrefillGroup] = []
        for item in scheduled:
            seq, start, end = item.seq, item.start, item.start + item.num_new_tokens
            token_start = len(input_ids)
            if item.num_new_tokens == 1 or item.draft:  # decode rows: one, or the last token and its draft
                for position, token in enumerate(item.input_token_ids, start):
                    decode_indices.append(len(input_ids))
                    if item.is_sampled:
                        logits_indices.append(len(input_ids))
                    input_ids.append(token)
                    positions.append(position)
                    slots.append(seq.block_table[position // bs] * bs + position % bs)
                    decode_rows.append((seq.block_table, position + 1))
                continue
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(_slots(seq.block_table, bs, start, end))
            prefills.append(self._prefill_group(item, token_start))
            if item.is_sampled:
                logits_indices.append(len(input_ids) - 1)
        tables, bias, lens = self._decode_context(decode_rows)
        batch = PagedBatch(
            slot_mapping=_long_tensor(slots, self.device),  # [N]
            decode_token_indices=_long_tensor(decode_indices, self.device),  # [S]
            decode_blocks=tables,
            decode_bias=bias,
            prefills=tuple(prefills),
            is_all_decode=not prefills,
            decode_lens=lens,
        )
        return _long_tensor(input_ids, self.device), _long_tensor(positions, self.device), batch, logits_indices  # [N], [N]

    def _prefill_group(self, item: ScheduledSeq, token_start: int) -> PrefillGroup:
        bs, device = self.block_size, self.device
        start, end = item.start, item.start + item.num_new_tokens
        num_blocks = -(-end // bs)
        query_pos = torch.arange(start, end, device=device)  # [n]
        is_future = torch.arange(num_blocks * bs, device=device)[None, :] > query_pos[:, None]  # [n, L]
        return PrefillGroup(
            token_start,
            token_start + item.num_new_tokens,
            end,
            torch.tensor(item.seq.block_table[:num_blocks], dtype=torch.long, device=device),  # [nb]
            self._bias(is_future)[:, None, :],  # [n, 1, L]
        )

    def _decode_context(self, decodes: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block tables of every decode row (a block table and a context length), padded,
        the bias hiding the padding, and the context lengths."""
        bs = self.block_size
        lens = [length for _, length in decodes]
        num_blocks = -(-max(lens, default=0) // bs)
        width = num_blocks * bs
        flat: list[int] = []
        for block_table, _ in decodes:
            row = block_table[:num_blocks]
            flat += row
            flat += [0] * (num_blocks - len(row))
        tables = _long_tensor(flat, self.device).view(len(decodes), num_blocks)  # [S, nb]
        # Row s is 0 on its lens[s] context tokens, -inf after: the window starting at
        # width - lens[s] of a line of `width` zeros then `width` -infs (one gather, not
        # a compare and a fill over [S, L]).
        windows = self._mask_line(width).unfold(0, width, 1)  # [width + 1, L]
        bias = windows.index_select(0, _long_tensor([width - n for n in lens], self.device))  # [S, L]
        return tables, bias[:, None, :], _long_tensor(lens, self.device)  # [S, nb], [S, 1, L], [S]

    def _mask_line(self, width: int) -> torch.Tensor:
        """`width` zeros then `width` -infs: [2 * width], a view of one cached line."""
        line = self._line
        if line is None or line.numel() < 2 * width:
            half = max(width, 1024)
            line = self._line = torch.cat([torch.zeros(half, dtype=self.dtype, device=self.device), torch.full((half,), float("-inf"), dtype=self.dtype, device=self.device)])
        half = line.numel() // 2
        return line[half - width : half + width]

    def _bias(self, is_masked: torch.Tensor) -> torch.Tensor:
        return torch.zeros(is_masked.shape, dtype=self.dtype, device=self.device).masked_fill_(is_masked, float("-inf"))


def _cpu_decode_kernel(model: torch.nn.Module, cache: CacheShape, dtype: torch.dtype, device: torch.device) -> DecodeKernel | None:
    """The C decode kernel for this model's attention shape (float32 on CPU), or None."""
    if device.type != "cpu" or dtype != torch.float32 or not cpu_kernels.is_enabled():
        return None
    attn = next((m for m in model.modules() if isinstance(m, MultiHeadLatentAttention)), None)
    if attn is None or not cpu_kernels.fits(attn.num_heads, cache.entry_dim, attn.kv_lora_rank, cache.block_size):
        return None
    return cpu_kernels.mla_decode(attn.num_heads, cache.entry_dim, attn.kv_lora_rank, cache.block_size)


def _long_tensor(values: list[int], device: torch.device) -> torch.Tensor:
    """`torch.tensor(values, dtype=long)`, about 3x faster for a step's index lists: a
    Python list goes to an int64 array in C, which the tensor wraps without a copy."""
    if not values:
        return torch.empty(0, dtype=torch.long, device=device)
    tensor = torch.frombuffer(array.array("q", values), dtype=torch.long)
    return tensor if device.type == "cpu" else tensor.to(device)


def _slots(block_table: list[int], block_size: int, start: int, end: int) -> list[int]:
    """Flat cache slots of positions start..end-1."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]
