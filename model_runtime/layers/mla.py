"""Multi-head latent attention (MLA) in its absorbed form, and the backend seam.

Keys and values are rebuilt from one compressed latent per token: `kv_a_proj_with_mqa`
gives a `kv_lora_rank` latent (normalised by `kv_a_layernorm`) plus one roped key of
`qk_rope_head_dim` shared by all heads; `kv_b_proj` would expand the latent into per-head
`k_nope` and `v`. The absorbed form never expands it: `kv_b_proj`'s key half W_UK is
folded into the query (q_latent = q_nope @ W_UK, so q_nope . k_nope = q_latent . latent)
and its value half W_UV is applied after attention, to the attention-weighted latent.
So a cache holds only the latent and the roped key.

For serving, `fuse_for_inference` may fold W_UK into the query projection (one matmul
gives q_latent and the unroped q_pe) and W_UV into `o_proj` (one matmul from the
attention-weighted latent to the output), where the folded weight costs at most
`FOLD_MAX_MAC_RATIO` times the multiply-adds of the two products it replaces: a tiny
model's decode step is bound by the number of operations, not their size. Kimi K2's
folded weights would be 2.5x (query) and 3.7x (output) the work, so it keeps the
products. The folded weights are copies made once from the weights at that time.

Cache bytes per token, Kimi K2 in bf16 (61 layers, 64 heads, kv_lora_rank 512,
qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128):
    MLA:         (512 + 64) values x 2 B x 61 layers          =    70,272 B (~69 KiB)
    plain MHA:   64 heads x (192 key + 128 value) x 2 B x 61  = 2,498,560 B (~2.4 MiB)
i.e. about 35.6x less. `ModelConfig.kv_bytes_per_token` computes the MLA figure.

Where the cached tokens live is not this layer's business: it calls a `LatentAttention`
backend (a dense reference one is in layers/latent_cache.py; the engine brings a paged
one). Shapes: N tokens, H heads, C = kv_lora_rank, R = qk_rope_head_dim,
P = qk_nope_head_dim, V = v_head_dim, D = hidden_size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime import cpu_kernels
from model_runtime.config import ModelConfig
from model_runtime.layers.norm import RMSNorm
from model_runtime.layers.rope import apply_rotary, softmax_scale

FOLD_MAX_MAC_RATIO = 1.5  # fold a product into its neighbour when that costs at most this much more work


class LatentAttention(Protocol):
    """Attention over cached latents, absorbed form.

    Given the new tokens' queries and latents, store `kv_latent`/`k_pe` in the cache and
    return, for each query, the softmax-weighted sum of the latents of its own sequence's
    cached tokens up to and including itself (causal), with scores
    `(q_latent . latent + q_pe . k_pe) * softmax_scale`.
    """

    def __call__(
        self,
        layer_idx: int,
        q_latent: torch.Tensor,  # [N, H, C]
        q_pe: torch.Tensor,  # [N, H, R]
        kv_latent: torch.Tensor,  # [N, C]
        k_pe: torch.Tensor,  # [N, R]
        softmax_scale: float,
    ) -> torch.Tensor:  # [N, H, C]
        ...


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.kv_lora_rank = config.kv_lora_rank
        self.nope_dim, self.rope_dim, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.is_interleaved = config.rope.is_interleaved
        self.softmax_scale = softmax_scale(config.rope, config.qk_head_dim)
        dim, heads, bias = config.hidden_size, config.num_attention_heads, config.attention_bias
        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(dim, heads * config.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(dim, config.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = nn.Linear(config.q_lora_rank, heads * config.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(dim, config.kv_lora_rank + config.qk_rope_head_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(config.kv_lora_rank, heads * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = nn.Linear(heads * self.v_dim, dim, bias=bias)
        self.q_folded: torch.Tensor | None = None  # [H*(C+R), q_lora_rank or D]: see fuse_for_inference
        self.o_folded: torch.Tensor | None = None  # [D, H*C]
        self.rope_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """Folds W_UK into the query projection and W_UV into `o_proj` where `fold_plan`
        says so (see the module doc), and on CPU in float32 rotates interleaved pairs in
        one C call (model_runtime/cpu_kernels.py). Call once the weights are final (the
        engine's runner does); training never does."""
        weight = self.kv_b_proj.weight
        if self.is_interleaved and weight.device.type == "cpu" and weight.dtype == torch.float32:
            self.rope_kernel = cpu_kernels.rope_pairs()
        heads, latent, nope, rope, v_dim = self.num_heads, self.kv_lora_rank, self.nope_dim, self.rope_dim, self.v_dim
        q_proj = self.q_proj if hasattr(self, "q_proj") else self.q_b_proj
        fold_q, fold_o = fold_plan(q_proj.in_features, self.o_proj.out_features, heads, latent, nope, rope, v_dim)
        w_uk, w_uv = self._w_kv()  # [H, P, C], [H, V, C]
        if fold_q:
            w_nope, w_pe = q_proj.weight.double().view(heads, nope + rope, -1).split([nope, rope], dim=1)  # [H, P, Q], [H, R, Q]
            w_latent = torch.bmm(w_uk.double().transpose(1, 2), w_nope)  # [H, C, Q]: q_nope @ W_UK, per head
            self.q_folded = torch.cat([w_latent, w_pe], dim=1).reshape(heads * (latent + rope), -1).to(q_proj.weight.dtype)  # [H*(C+R), Q]
        if fold_o:
            w_o = self.o_proj.weight.double().view(-1, heads, v_dim)  # [D, H, V]
            folded = torch.bmm(w_o.transpose(0, 1), w_uv.double()).transpose(0, 1)  # [D, H, C]: o_proj after W_UV
            self.o_folded = folded.reshape(w_o.shape[0], heads * latent).to(self.o_proj.weight.dtype)  # [D, H*C]

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor | None, attention: LatentAttention
    ) -> torch.Tensor:
        """`cos, sin` per token `[N, R/2]`, or the complex rotation and None (rope.rotation_tables)."""
        num_tokens = x.shape[0]
        q_in = x if hasattr(self, "q_proj") else self.q_a_layernorm(self.q_a_proj(x))  # [N, D] or [N, q_lora_rank]
        if self.q_folded is not None:
            q = F.linear(q_in, self.q_folded).view(num_tokens, self.num_heads, self.kv_lora_rank + self.rope_dim)  # [N, H, C+R]
            q_latent, q_pe = q.split([self.kv_lora_rank, self.rope_dim], dim=-1)  # [N, H, C], [N, H, R]
        else:
            q_proj = self.q_proj if hasattr(self, "q_proj") else self.q_b_proj
            q = q_proj(q_in).view(num_tokens, self.num_heads, self.nope_dim + self.rope_dim)  # [N, H, P+R]
            q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)  # [N, H, P], [N, H, R]
            w_uk = self._w_kv()[0]  # [H, P, C]
            # Head-batched matmuls, not einsum: the same products with less dispatch per call.
            q_latent = torch.bmm(q_nope.transpose(0, 1), w_uk).transpose(0, 1)  # [N, H, C]
        kv = self.kv_a_proj_with_mqa(x)  # [N, C+R]
        kv_latent, k_pe = kv.split([self.kv_lora_rank, self.rope_dim], dim=-1)  # [N, C], [N, R]
        kv_latent = self.kv_a_layernorm(kv_latent)  # [N, C]
        if self.rope_kernel is not None and sin is None and not x.requires_grad:  # cos: the complex rotation
            q_pe, k_pe = self.rope_kernel(q_pe, cos), self.rope_kernel(k_pe, cos)  # [N, H, R], [N, R]
        else:
            q_pe = apply_rotary(q_pe, cos, sin, is_interleaved=self.is_interleaved)  # [N, H, R]
            k_pe = apply_rotary(k_pe, cos, sin, is_interleaved=self.is_interleaved)  # [N, R]

        o_latent = attention(self.layer_idx, q_latent, q_pe, kv_latent, k_pe, self.softmax_scale)  # [N, H, C]
        if self.o_folded is not None:
            return F.linear(o_latent.reshape(num_tokens, -1), self.o_folded, self.o_proj.bias)  # [N, D]
        o = torch.bmm(o_latent.transpose(0, 1), self._w_kv()[1].transpose(1, 2))  # [H, N, V]
        return self.o_proj(o.transpose(0, 1).reshape(num_tokens, self.num_heads * self.v_dim))  # [N, D]

    def _w_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`kv_b_proj` split into W_UK `[H, P, C]` and W_UV `[H, V, C]` (views)."""
        w_kv = self.kv_b_proj.weight.view(self.num_heads, self.nope_dim + self.v_dim, self.kv_lora_rank)
        w_uk, w_uv = w_kv.split([self.nope_dim, self.v_dim], dim=1)
        return w_uk, w_uv


def fold_plan(q_in: int, dim: int, heads: int, latent: int, nope: int, rope: int, v_dim: int) -> tuple[bool, bool]:
    """Whether to fold W_UK into the query projection (`q_in` its input width) and W_UV
    into `o_proj` (`dim` its output width): each when the folded matmul's multiply-adds
    per token are at most `FOLD_MAX_MAC_RATIO` times those of the two it replaces."""
    fold_q = q_in * heads * (latent + rope) <= FOLD_MAX_MAC_RATIO * (q_in * heads * (nope + rope) + heads * nope * latent)
    fold_o = dim * heads * latent <= FOLD_MAX_MAC_RATIO * (heads * v_dim * latent + heads * v_dim * dim)
    return fold_q, fold_o
