"""Mixture-of-experts block: sigmoid router with group-limited top-k, routed and shared experts.

Routing (DeepSeek-V3's `noaux_tc`): sigmoid scores; `e_score_correction_bias` is added
for *selection only*; experts are first limited to the `topk_group` groups (of
`n_group`) whose best two biased scores sum highest, then the top `num_experts_per_tok`
are taken; their weights are the unbiased scores, renormalised when `norm_topk_prob`,
times `routed_scaling_factor`. The router runs in float32 whatever the model dtype.

Expert compute sorts the (token, expert) pairs by expert. When the experts' weights are
stacked in the model dtype (`stacked_weights`), the batch is small (decode-sized: there
launches, not FLOPs, are the cost), at least half the experts are busy, and padding every
expert to the busiest one's count at most doubles the rows (or is tiny), each expert's
tokens go into its own row block of one padded `[E, M, D]` batch and two batched matmuls
do all experts at once (a decode step with every expert busy: a handful of ops instead of
a dozen per expert). Otherwise one matmul per expert over all tokens routed to it; the
loop is over experts that got tokens, never over tokens. When even running every token
through every expert costs fewer multiply-adds than `DENSE_MAX_MACS` (a tiny model's
decode step), no sorting at all: two batched matmuls over all experts and one that sums
each token's outputs weighted by its routing weights (zero for experts it did not pick),
a few ops in place of some twenty; for serving, `MoE.fuse_for_inference` stacks the
shared expert after the routed ones, so that path computes it too, with weight 1.
`RoutedExperts.expert_weights`
is the seam where quantized storage plugs in (quant/int4.py). Shapes: N tokens, D
hidden, E experts, K experts per token, I moe_intermediate_size, M padded rows per expert.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime import cpu_kernels
from model_runtime.config import ModelConfig
from model_runtime.layers.mlp import SwiGLU

GROUPED_SMALL_ROWS = 8  # padded rows per expert below which launches, not FLOPs, dominate
GROUPED_MAX_ROWS = 256  # padded rows per expert above which the per-expert loop is faster
SPARSE_MAX_TOKENS = 256  # steps up to this many tokens use the CPU experts kernel when fused; larger ones the matmul paths
SPARSE_MAX_WEIGHTS = 1 << 22  # routed experts' weights up to this many values get the kernel's transposed copies
DENSE_MAX_MACS = 1 << 22  # every token through every expert: below this, cheaper than sorting (~100 us of ops on one core)


class TopkRouter(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.n_group, self.topk_group = config.num_experts_per_tok, config.n_group, config.topk_group
        self.norm_topk_prob, self.scaling = config.norm_topk_prob, config.routed_scaling_factor
        num_experts = config.n_routed_experts
        self.weight = nn.Parameter(torch.empty(num_experts, config.hidden_size, dtype=torch.float32))
        self.register_buffer("e_score_correction_bias", torch.zeros(num_experts, dtype=torch.float32))
        self.kernel: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None  # see fuse_for_inference

    def fuse_for_inference(self) -> None:
        """On CPU, without group limits, the selection in one C call (model_runtime/cpu_kernels.py)
        where a C compiler builds it. Serving only."""
        is_cpu_float = self.weight.device.type == "cpu" and self.weight.dtype == self.e_score_correction_bias.dtype == torch.float32
        if is_cpu_float and self.topk_group >= self.n_group:
            self.kernel = cpu_kernels.route()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kernel is not None and x.device.type == "cpu" and not x.requires_grad:
            logits = F.linear(x.float(), self.weight)  # [N, E]
            return self.kernel(logits, self.e_score_correction_bias, self.top_k, self.norm_topk_prob, self.scaling)
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # [N, E]
        biased = scores + self.e_score_correction_bias.float()  # [N, E]
        if self.topk_group < self.n_group:
            grouped = biased.view(x.shape[0], self.n_group, -1)  # [N, G, E/G]
            group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # [N, G]
            best_groups = group_scores.topk(self.topk_group, dim=-1).indices  # [N, topk_group]
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)  # [N, G]
            biased = grouped.masked_fill(~keep[..., None], float("-inf")).view_as(biased)  # [N, E]
        topk_idx = biased.topk(self.top_k, dim=-1).indices  # [N, K]
        topk_w = scores.gather(1, topk_idx)  # [N, K]
        if self.norm_topk_prob:
            topk_w = topk_w / (topk_w.sum(-1, keepdim=True) + 1e-20)
        return topk_idx, topk_w * self.scaling


class RoutedExperts(nn.Module):
    """Base of expert storage: subclasses say how to get expert e's weights."""

    num_experts: int
    holds_all_experts = True  # False: an expert-parallel shard (parallel/sharding.py)

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert `expert`'s fused gate|up weight `[2I, D]` and down weight `[D, I]`."""
        raise NotImplementedError

    def stacked_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All experts' gate|up `[E, 2I, D]` and down `[E, D, I]` weights without copying,
        or None where the storage has no such form (the per-expert loop is used)."""
        return None

    def supports_cuda_graphs(self, device: torch.device) -> bool:
        """Whether `forward` on `device` is free of host syncs (the sort above counts
        experts on the host), so a CUDA graph can capture it."""
        return False

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_w: torch.Tensor) -> torch.Tensor:
        stacked = self.stacked_weights(x.dtype)
        if stacked is not None and self._is_dense_cheaper(x.shape[0], stacked[0]):
            return self._dense(x, topk_idx, topk_w, stacked)  # [N, D]
        top_k = topk_idx.shape[1]
        flat_idx = topk_idx.flatten()  # [N*K]
        order = flat_idx.argsort(stable=True)  # [N*K] pairs grouped by expert
        token_of = order // top_k  # [N*K]
        counts = torch.bincount(flat_idx, minlength=self.num_experts)  # [E]
        max_count, num_active = (int(v) for v in torch.stack([counts.max(), counts.count_nonzero()]).tolist())
        if stacked is not None and self._is_grouped_cheaper(flat_idx.numel(), max_count, num_active):
            out = self._grouped(x, token_of, flat_idx.index_select(0, order), counts, max_count, stacked)  # [N*K, D]
        else:
            out = self._per_expert(x.index_select(0, token_of), counts.tolist(), x.dtype)  # [N*K, D]
        weighted = out * topk_w.flatten().index_select(0, order)[:, None].to(out.dtype)  # [N*K, D]
        return torch.zeros_like(x).index_add_(0, token_of, weighted)  # [N, D]

    @staticmethod
    def _is_dense_cheaper(num_tokens: int, w13: torch.Tensor) -> bool:
        """Every token through every expert (N * E * 3 * I * D multiply-adds, `w13` being
        `[E, 2I, D]`) is cheaper than sorting when it is this small."""
        return num_tokens * w13.numel() * 3 // 2 <= DENSE_MAX_MACS

    def _is_grouped_cheaper(self, num_pairs: int, max_count: int, num_active: int) -> bool:
        """The padded batch saves launches, which only matter for small batches (up to
        `GROUPED_MAX_ROWS` per expert; past that one expert at a time, its rows still in
        cache, is faster). It reads every expert's weights: worth it when at least half of
        them are busy, and its rows are at most twice the real ones or so few (up to
        `GROUPED_SMALL_ROWS` per expert) that the padding costs less than the launches."""
        padded_rows = self.num_experts * max_count
        is_busy = 2 * num_active >= self.num_experts
        is_small = max_count <= GROUPED_MAX_ROWS
        return is_busy and is_small and (padded_rows <= 2 * num_pairs or max_count <= GROUPED_SMALL_ROWS)

    def _per_expert(self, x_sorted: torch.Tensor, counts: list[int], dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty_like(x_sorted)  # [N*K, D]
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            w13, w2 = self.expert_weights(expert, dtype)  # [2I, D], [D, I]
            gate, up = F.linear(x_sorted[start : start + count], w13).chunk(2, dim=-1)  # [n, I] each
            out[start : start + count] = F.linear(F.silu(gate) * up, w2)  # [n, D]
            start += count
        return out

    def _dense(
        self,
        x: torch.Tensor,  # [N, D]
        topk_idx: torch.Tensor,  # [N, K]
        topk_w: torch.Tensor,  # [N, K]
        stacked: tuple[torch.Tensor, torch.Tensor],  # [E, 2I, D], [E, D, I]
    ) -> torch.Tensor:
        w13, w2 = stacked  # [E', 2I, D], [E', D, I]: E' > E where shared experts follow the routed ones (weight 1)
        gate, up = torch.matmul(x, w13.transpose(1, 2)).chunk(2, dim=-1)  # [E', N, I] each
        down = torch.bmm(F.silu(gate) * up, w2.transpose(1, 2))  # [E', N, D]
        if w13.shape[0] == self.num_experts:
            weights = torch.zeros(x.shape[0], self.num_experts, dtype=x.dtype, device=x.device)  # [N, E]
        else:
            weights = torch.ones(x.shape[0], w13.shape[0], dtype=x.dtype, device=x.device)  # [N, E']
            weights[:, : self.num_experts] = 0
        weights.scatter_(1, topk_idx, topk_w.to(x.dtype))
        return torch.bmm(weights[:, None, :], down.transpose(0, 1)).squeeze(1)  # [N, D]

    def _grouped(
        self,
        x: torch.Tensor,  # [N, D]
        token_of: torch.Tensor,  # [N*K] token of each pair, pairs grouped by expert
        expert_of: torch.Tensor,  # [N*K] expert of each pair, ascending
        counts: torch.Tensor,  # [E]
        max_count: int,
        stacked: tuple[torch.Tensor, torch.Tensor],  # [E, 2I, D], [E, D, I]
    ) -> torch.Tensor:
        w13, w2 = stacked
        num_experts, dim = self.num_experts, x.shape[1]
        first_of_expert = counts.cumsum(0) - counts  # [E] first pair of each expert
        rank = torch.arange(expert_of.numel(), device=x.device) - first_of_expert.index_select(0, expert_of)  # [N*K] pair's row within its expert
        dest = expert_of * max_count + rank  # [N*K] pair's row in the padded batch
        # Padding rows read token 0: computed, never read back.
        source = torch.zeros(num_experts * max_count, dtype=torch.long, device=x.device).index_copy_(0, dest, token_of)  # [E*M]
        padded = x.index_select(0, source).view(num_experts, max_count, dim)  # [E, M, D]
        gate, up = torch.bmm(padded, w13.transpose(1, 2)).chunk(2, dim=-1)  # [E, M, I] each
        down = torch.bmm(F.silu(gate) * up, w2.transpose(1, 2))  # [E, M, D]
        return down.view(-1, dim).index_select(0, dest)  # [N*K, D]


class DenseExperts(RoutedExperts):
    """Experts kept in the model dtype, stacked: gate|up fused in `w13`."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim
        self.w13 = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim))  # [E, 2I, D]
        self.w2 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))  # [E, D, I]

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w13[expert].to(dtype), self.w2[expert].to(dtype)

    def stacked_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.w13, self.w2) if self.w13.dtype == dtype else None


class MoE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = TopkRouter(config)
        self.experts: RoutedExperts = DenseExperts(
            config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        )
        self.shared_experts = (
            SwiGLU(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
            if config.n_shared_experts
            else None
        )
        self.with_shared: tuple[torch.Tensor, torch.Tensor] | None = None  # see fuse_for_inference
        self.sparse: tuple[torch.Tensor, torch.Tensor] | None = None  # [E', D, 2I], [E', I, D]: see _fuse_sparse_kernel
        self.sparse_kernel: Callable[..., torch.Tensor] | None = None

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """For serving (the engine's runner calls it once the weights are final):
        - on CPU in float32, small experts: the C kernel that runs each token of a small
          step through its own experts only (`_fuse_sparse_kernel`);
        - dense experts: the shared expert stacked after the routed ones (`[E+1, 2I, D]`,
          `[E+1, D, I]`), so the all-experts path of a small step computes it in the same
          two matmuls. The routed and shared weights become views of the stack: no extra
          memory. Only for dense experts stacked in one dtype, a shared expert of the
          routed experts' size, and experts small enough for that path (`DENSE_MAX_MACS`)."""
        if self.sparse_kernel is None:
            self._fuse_sparse_kernel()
        experts, shared = self.experts, self.shared_experts
        if shared is None or type(experts) is not DenseExperts or self.with_shared is not None:
            return
        shared.fuse_for_inference()
        w13, w2 = experts.w13, experts.w2  # [E, 2I, D], [E, D, I]
        if shared.gate_up is None or shared.gate_up.shape != w13.shape[1:] or shared.down_proj.weight.shape != w2.shape[1:]:
            return
        if shared.gate_up.dtype != w13.dtype or not RoutedExperts._is_dense_cheaper(1, w13):
            return
        num = experts.num_experts
        stacked13 = torch.cat([w13, shared.gate_up[None]])  # [E+1, 2I, D]
        stacked2 = torch.cat([w2, shared.down_proj.weight[None]])  # [E+1, D, I]
        half = shared.gate_proj.weight.shape[0]
        w13.data, w2.data = stacked13[:num], stacked2[:num]
        shared.gate_up = stacked13[num]
        shared.gate_proj.weight.data, shared.up_proj.weight.data = stacked13[num, :half], stacked13[num, half:]
        shared.down_proj.weight.data = stacked2[num]
        self.with_shared = (stacked13, stacked2)

    def _fuse_sparse_kernel(self) -> None:
        """On CPU in float32, for small routed experts (`SPARSE_MAX_WEIGHTS`) with a shared
        expert of their size or none: the C kernel (model_runtime/cpu_kernels.py) over
        transposed copies of the (dequantized) routed and shared weights, for steps of up
        to `SPARSE_MAX_TOKENS` tokens."""
        if not self.experts.holds_all_experts:
            return  # an expert-parallel shard: its forward picks its own pairs
        stacked = self.experts.stacked_weights(torch.float32)  # INT4: dequantized once, kept by the storage
        if stacked is None or stacked[0].device.type != "cpu" or stacked[0].numel() * 3 // 2 > SPARSE_MAX_WEIGHTS:
            return
        w13, w2 = stacked  # [E, 2I, D], [E, D, I]
        shared = self.shared_experts
        if shared is not None:
            shared.fuse_for_inference()  # its gate|up in one [2I, D] tensor
            if shared.gate_up is None or shared.gate_up.dtype != torch.float32 or shared.gate_up.shape != w13.shape[1:]:
                return
            w13 = torch.cat([w13, shared.gate_up[None]])  # [E+1, 2I, D]
            w2 = torch.cat([w2, shared.down_proj.weight[None]])  # [E+1, D, I]
        kernel = cpu_kernels.moe_experts()
        if kernel is not None:
            self.sparse = (w13.transpose(1, 2).contiguous(), w2.transpose(1, 2).contiguous())  # [E', D, 2I], [E', I, D]
            self.sparse_kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        topk_idx, topk_w = self.gate(x)  # [N, K], [N, K]
        if self.sparse_kernel is not None and x.shape[0] <= SPARSE_MAX_TOKENS and x.device.type == "cpu" and not x.requires_grad:
            return self.sparse_kernel(x, topk_idx, topk_w, *self.sparse, self.experts.num_experts)  # [N, D], shared expert included
        if self.with_shared is not None and RoutedExperts._is_dense_cheaper(x.shape[0], self.with_shared[0]):
            return self.experts._dense(x, topk_idx, topk_w, self.with_shared)  # [N, D], shared expert included
        out = self.experts(x, topk_idx, topk_w)  # [N, D]
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out
