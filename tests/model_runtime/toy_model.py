"""A toy absorbed-MLA language model for engine tests: the `forward_tokens` contract of
the model issue with a few random layers, and a dense no-cache `forward` to compare with.
Not the real architecture; the real model is tested against transformers elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 1024
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_heads: int = 2
    kv_lora_rank: int = 16
    qk_rope_head_dim: int = 8


class ToyLayer(nn.Module):
    def __init__(self, config: ToyConfig, layer_idx: int) -> None:
        super().__init__()
        c, r, h = config.kv_lora_rank, config.qk_rope_head_dim, config.num_heads
        self.layer_idx, self.h, self.c, self.r = layer_idx, h, c, r
        self.q = nn.Linear(config.hidden_size, h * (c + r), bias=False)
        self.kv = nn.Linear(config.hidden_size, c + r, bias=False)
        self.o = nn.Linear(h * c, config.hidden_size, bias=False)
        self.pos = nn.Embedding(4096, r)  # stands in for rotary: position-dependent k_pe/q_pe

    def forward(self, x: torch.Tensor, positions: torch.Tensor, attention) -> torch.Tensor:
        n = x.shape[0]
        q = self.q(x).view(n, self.h, self.c + self.r)  # [N, H, C+R]
        q_latent, q_pe = q.split([self.c, self.r], dim=-1)
        kv = self.kv(x)  # [N, C+R]
        kv_latent, k_pe = kv.split([self.c, self.r], dim=-1)
        q_pe = q_pe + self.pos(positions)[:, None, :]  # [N, H, R]
        k_pe = k_pe + self.pos(positions)  # [N, R]
        out = attention(self.layer_idx, q_latent.contiguous(), q_pe.contiguous(), kv_latent.contiguous(), k_pe.contiguous(), (self.c + self.r) ** -0.5)
        return x + self.o(out.reshape(n, self.h * self.c))  # [N, D]


class ToyModel(nn.Module):
    def __init__(self, config: ToyConfig, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ToyLayer(config, i) for i in range(config.num_hidden_layers))
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        with torch.no_grad():
            self.head.weight.mul_(4.0)  # sharper logits: fewer near-ties in greedy tests

    def forward_tokens(self, input_ids, positions, attention, logits_indices=None):
        x = self.embed(input_ids)  # [N, D]
        for layer in self.layers:
            x = layer(x, positions, attention)
        if logits_indices is not None:
            x = x[logits_indices]
        return self.head(x)  # [M, V]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Dense reference: each row alone, full causal attention, no cache."""
        return torch.stack([self.forward_tokens(row, torch.arange(row.shape[0]), DenseAttention()) for row in input_ids])


class DenseAttention:
    """Causal attention over exactly the tokens passed (one sequence, no cache)."""

    def __call__(self, layer_idx, q_latent, q_pe, kv_latent, k_pe, softmax_scale):
        scores = (torch.einsum("nhc,tc->nht", q_latent, kv_latent) + torch.einsum("nhr,tr->nht", q_pe, k_pe)) * softmax_scale
        n = q_latent.shape[0]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        probs = scores.masked_fill(mask[:, None, :], float("-inf")).softmax(-1)
        return torch.einsum("nht,tc->nhc", probs, kv_latent)


def greedy_reference(model: ToyModel, prompt: list[int], max_tokens: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]
