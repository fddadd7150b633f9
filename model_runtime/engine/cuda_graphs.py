"""Decode steps replayed from CUDA graphs, for the model runner on CUDA.

A decode step launches a few hundred small kernels (per layer: norms, MLA projections,
attention, router, experts); at small batches launching them, not running them, sets
the pace. `DecodeGraphs` captures the model's forward of a decode-only step once per
(padded batch size, padded context blocks) and replays it: sequences padded up to the
next of `BATCH_SIZES`, context up to the next power of two of blocks (so a step reads
at most twice its context, never the whole cache). Graphs are captured on first use of
a shape and share one memory pool; prefill, mixed steps and larger batches stay eager.

Every input a captured step reads lives in that graph's static tensors, the paged
attention metadata (`PagedBatch`: slot mapping, block tables, padding bias) included;
a replay copies the step's values in. Padding rows are token 0 at position 0, write
their latent to a scratch block no sequence owns and attend to that slot alone, so
they stay finite and touch no real cache entry.

What a graph can hold is limited: nothing in the captured forward may sync with the
host or change shape with the data. The runner uses graphs only where every routed
expert layer says so (`RoutedExperts.supports_cuda_graphs`: the Triton INT4 path).
Shapes: S sequences, Sp padded, nb context blocks, nbp padded, B block size, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_runtime.engine.paged_attention import PagedBatch, PagedLatentAttention
from model_runtime.layers.moe import RoutedExperts

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def can_capture(model: torch.nn.Module, device: torch.device) -> bool:
    """CUDA, and every routed-expert layer's forward free of host syncs there."""
    experts = [m for m in model.modules() if isinstance(m, RoutedExperts)]
    return device.type == "cuda" and all(e.supports_cuda_graphs(device) for e in experts)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph | None  # None until captured
    input_ids: torch.Tensor  # [Sp]
    positions: torch.Tensor  # [Sp]
    batch: PagedBatch  # static: slot_mapping [Sp], decode_blocks [Sp, nbp], decode_bias [Sp, 1, nbp*B]
    logits: torch.Tensor  # [Sp, V] written by each replay


class DecodeGraphs:
    def __init__(self, model: torch.nn.Module, attention: PagedLatentAttention, *, scratch_block: int, dtype: torch.dtype, device: torch.device) -> None:
        self.model, self.attention, self.dtype, self.device = model, attention, dtype, device
        self.block_size = attention.kv_cache.shape[2]
        self.scratch_block = scratch_block  # a cache block no sequence owns: padding rows write there
        self.max_blocks = scratch_block  # the real blocks are 0..scratch_block-1
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self.pool: tuple[int, int] | None = None  # one memory pool for all graphs, made at the first capture

    def padded_shape(self, num_seqs: int, num_blocks: int) -> tuple[int, int] | None:
        """The captured (batch, blocks) a decode step of this size replays, None if too big."""
        batch = next((b for b in BATCH_SIZES if b >= num_seqs), None)
        if batch is None or num_blocks > self.max_blocks:
            return None
        return batch, min(1 << max(0, num_blocks - 1).bit_length(), self.max_blocks)

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: PagedBatch, shape: tuple[int, int]) -> torch.Tensor:
        """Logits `[S, V]` of a decode-only step (`batch.is_all_decode`), by replay."""
        graph = self.graphs.get(shape) or self._capture(*shape)
        num_seqs, num_blocks = batch.decode_blocks.shape
        self._fill_padding(graph)
        graph.input_ids[:num_seqs].copy_(input_ids)
        graph.positions[:num_seqs].copy_(positions)
        graph.batch.slot_mapping[:num_seqs].copy_(batch.slot_mapping)
        graph.batch.decode_blocks[:num_seqs, :num_blocks].copy_(batch.decode_blocks)
        graph.batch.decode_bias[:num_seqs, :, : num_blocks * self.block_size].copy_(batch.decode_bias)
        graph.graph.replay()  # type: ignore[union-attr]
        return graph.logits[:num_seqs]  # [S, V]

    def _fill_padding(self, graph: _Graph) -> None:
        """Every row a padding row: token 0 at position 0 in the scratch block's first slot."""
        graph.input_ids.zero_()
        graph.positions.zero_()
        graph.batch.slot_mapping.fill_(self.scratch_block * self.block_size)
        graph.batch.decode_blocks.fill_(self.scratch_block)
        graph.batch.decode_bias.fill_(float("-inf"))
        graph.batch.decode_bias[:, :, 0] = 0.0  # slot 0: the row's own latent (a real row's position 0)

    def _static(self, num_seqs: int, num_blocks: int) -> _Graph:
        """A graph's static inputs, every row padding, and no graph yet."""
        long = {"dtype": torch.long, "device": self.device}
        batch = PagedBatch(
            slot_mapping=torch.empty(num_seqs, **long),  # [Sp]
            decode_token_indices=torch.arange(num_seqs, **long),  # [Sp] unread: all rows decode
            decode_blocks=torch.empty(num_seqs, num_blocks, **long),  # [Sp, nbp]
            decode_bias=torch.empty(num_seqs, 1, num_blocks * self.block_size, dtype=self.dtype, device=self.device),  # [Sp, 1, nbp*B]
            prefills=(),
            is_all_decode=True,
        )
        graph = _Graph(None, torch.empty(num_seqs, **long), torch.empty(num_seqs, **long), batch, torch.empty(0))
        self._fill_padding(graph)
        return graph

    def _capture(self, num_seqs: int, num_blocks: int) -> _Graph:
        graph = self._static(num_seqs, num_blocks)
        self.attention.set_batch(graph.batch)
        # One eager run first, off the default stream as capture wants: triton compiles,
        # cuBLAS picks its kernels, lazy buffers get made. Padding rows write the scratch block only.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.model.forward_tokens(graph.input_ids, graph.positions, self.attention)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            self.pool: tuple[int, int] | None = None  # one memory pool for all graphs, made at the first capture
        graph.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph.graph, pool=self.pool):
            graph.logits = self.model.forward_tokens(graph.input_ids, graph.positions, self.attention)  # [Sp, V]
        self.graphs[(num_seqs, num_blocks)] = graph
        return graph
