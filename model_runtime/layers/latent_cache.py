"""A dense reference `LatentAttention` backend: each sequence's latents in plain tensors.

Meant for `model(input_ids)`, tests and small offline runs; the serving engine brings a
paged cache of its own. Before each forward, `set_batch` says which sequences the flat
tokens belong to (grouped by sequence, in order) and how many new tokens each brings;
the new tokens continue their sequence's cached ones. Loops over sequences, never over
tokens. Shapes as in layers/mla.py, plus T = cached tokens of one sequence.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


class DenseLatentCache:
    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self._layers: dict[tuple[Hashable, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._lengths: dict[Hashable, int] = {}
        self._batch: list[tuple[Hashable, int]] = []

    def set_batch(self, seq_ids: Sequence[Hashable], num_new_tokens: Sequence[int]) -> None:
        if len(seq_ids) != len(num_new_tokens):
            raise ValueError("seq_ids and num_new_tokens differ in length")
        self._batch = list(zip(seq_ids, num_new_tokens))

    def num_cached_tokens(self, seq_id: Hashable) -> int:
        return self._lengths.get(seq_id, 0)

    def free(self, seq_id: Hashable) -> None:
        self._lengths.pop(seq_id, None)
        for key in [k for k in self._layers if k[0] == seq_id]:
            del self._layers[key]

    def __call__(
        self,
        layer_idx: int,
        q_latent: torch.Tensor,  # [N, H, C]
        q_pe: torch.Tensor,  # [N, H, R]
        kv_latent: torch.Tensor,  # [N, C]
        k_pe: torch.Tensor,  # [N, R]
        softmax_scale: float,
    ) -> torch.Tensor:
        if sum(n for _, n in self._batch) != q_latent.shape[0]:
            raise ValueError("set_batch's token counts do not add up to the tokens passed")
        out = torch.empty_like(q_latent)  # [N, H, C]
        start = 0
        for seq_id, num_new in self._batch:
            end = start + num_new
            past = self._lengths.get(seq_id, 0)
            old = self._layers.get((seq_id, layer_idx))
            latent, pe = kv_latent[start:end], k_pe[start:end]  # [n, C], [n, R]
            if old is not None:
                latent, pe = torch.cat([old[0], latent]), torch.cat([old[1], pe])  # [T, C], [T, R]
            self._layers[(seq_id, layer_idx)] = (latent, pe)
            out[start:end] = _causal_attention(q_latent[start:end], q_pe[start:end], latent, pe, past, softmax_scale)
            start = end
        if layer_idx == self.num_layers - 1:
            for seq_id, num_new in self._batch:  # last layer done: the new tokens are cached
                self._lengths[seq_id] = self._lengths.get(seq_id, 0) + num_new
        return out


def _causal_attention(
    q_latent: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, pe: torch.Tensor, past: int, scale: float
) -> torch.Tensor:
    num_new, total = q_latent.shape[0], latent.shape[0]
    scores = torch.einsum("nhc,tc->nht", q_latent, latent) + torch.einsum("nhr,tr->nht", q_pe, pe)  # [n, H, T]
    query_pos = torch.arange(past, past + num_new, device=latent.device)  # [n]
    is_future = torch.arange(total, device=latent.device)[None, :] > query_pos[:, None]  # [n, T]
    scores = (scores * scale).masked_fill(is_future[:, None, :], float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(latent.dtype)  # [n, H, T]
    return torch.einsum("nht,tc->nhc", probs, latent)  # [n, H, C]
