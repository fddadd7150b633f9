"""The sharding pass: narrows a meta-device model to one rank's part, tells the loader
which slices to read, and adds the collectives as forward hooks (see __init__ for what
each rank holds). The model file is untouched; only module sizes and hooks change.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_runtime.config import ModelConfig
from model_runtime.engine.errors import WorkerError
from model_runtime.errors import ParallelConfigError
from model_runtime.layers.mlp import SwiGLU
from model_runtime.layers.moe import DenseExperts, MoE
from model_runtime.loader import Narrow, build_meta_model, load_weights, materialize
from model_runtime.quant.int4 import Int4Experts

COLLECTIVE_TIMEOUT_S = 1800  # one step's collectives; idle workers wait on their pipe, not here


# -- the sharding pass -------------------------------------------------------------


def check_parallel_config(config: ModelConfig, world_size: int) -> None:
    """Raises `ParallelConfigError` unless `world_size` splits heads, MLPs and experts evenly."""
    if world_size < 1:
        raise ParallelConfigError(f"tensor_parallel_size must be at least 1, not {world_size}")
    sizes = {
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
    }
    if config.n_routed_experts:
        sizes["n_routed_experts"] = config.n_routed_experts
        sizes["moe_intermediate_size x n_shared_experts"] = config.moe_intermediate_size * config.n_shared_experts
    uneven = [f"{name} {size}" for name, size in sizes.items() if size % world_size]
    if uneven:
        raise ParallelConfigError(f"tensor_parallel_size {world_size} does not divide {', '.join(uneven)}")


def shard_model(model: nn.Module, rank: int, world_size: int) -> dict[str, Narrow]:
    """Narrows a meta-device model to rank `rank`'s part, in place; returns what the
    loader must read for each narrowed tensor (state-dict names, plus one
    `model.layers.L.mlp.experts` entry per MoE layer for its expert range)."""
    config: ModelConfig = model.config
    check_parallel_config(config, world_size)
    narrows: dict[str, Narrow] = {}
    for index, layer in enumerate(model.model.layers):
        prefix = f"model.layers.{index}"
        attn = layer.self_attn
        heads = attn.num_heads // world_size
        attn.num_heads = heads
        q_name = "q_proj" if hasattr(attn, "q_proj") else "q_b_proj"
        qk, kv = attn.nope_dim + attn.rope_dim, attn.nope_dim + attn.v_dim
        _split_linear(attn, q_name, 0, rank * heads * qk, heads * qk, rank, f"{prefix}.self_attn", narrows)
        _split_linear(attn, "kv_b_proj", 0, rank * heads * kv, heads * kv, rank, f"{prefix}.self_attn", narrows)
        _split_linear(attn, "o_proj", 1, rank * heads * attn.v_dim, heads * attn.v_dim, rank, f"{prefix}.self_attn", narrows)
        mlp = layer.mlp
        if isinstance(mlp, MoE):
            _split_experts(mlp, rank, world_size, f"{prefix}.mlp.experts", narrows)
            if mlp.shared_experts is not None:
                _split_swiglu(mlp.shared_experts, rank, world_size, f"{prefix}.mlp.shared_experts", narrows)
        else:
            _split_swiglu(mlp, rank, world_size, f"{prefix}.mlp", narrows)
    if _is_vocab_split(config, world_size):
        rows = config.vocab_size // world_size
        _split_linear(model, "lm_head", 0, rank * rows, rows, rank, "", narrows)
    return narrows


def _is_vocab_split(config: ModelConfig, world_size: int) -> bool:
    # Tied: the lm_head is the replicated embedding, no extra memory to save.
    return not config.tie_word_embeddings and config.vocab_size % world_size == 0


def _split_linear(parent: nn.Module, name: str, dim: int, start: int, length: int, rank: int, prefix: str, narrows: dict[str, Narrow]) -> None:
    old: nn.Linear = getattr(parent, name)
    out_features, in_features = (length, old.in_features) if dim == 0 else (old.out_features, length)
    has_bias = old.bias is not None
    with torch.device("meta"):
        setattr(parent, name, nn.Linear(in_features, out_features, bias=has_bias, dtype=old.weight.dtype))
    key = f"{prefix}.{name}" if prefix else name
    narrows[f"{key}.weight"] = Narrow(dim, start, length)
    if has_bias:  # column-parallel: its rows; row-parallel: summed over ranks, so rank 0 alone adds it
        narrows[f"{key}.bias"] = Narrow(0, start, length) if dim == 0 else Narrow(0, 0, 0 if rank else old.out_features)


def _split_swiglu(mlp: SwiGLU, rank: int, world_size: int, prefix: str, narrows: dict[str, Narrow]) -> None:
    rows = mlp.gate_proj.out_features // world_size
    _split_linear(mlp, "gate_proj", 0, rank * rows, rows, rank, prefix, narrows)
    _split_linear(mlp, "up_proj", 0, rank * rows, rows, rank, prefix, narrows)
    _split_linear(mlp, "down_proj", 1, rank * rows, rows, rank, prefix, narrows)


class _ExpertShard:
    """A rank's slice of a layer's routed experts, `first_expert` onwards: takes the
    layer's global routing and returns the weighted sum over its own experts only."""

    first_expert: int = 0
    num_experts: int
    holds_all_experts = False

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_w: torch.Tensor) -> torch.Tensor:
        local = topk_idx - self.first_expert  # [N, K]
        token, slot = ((local >= 0) & (local < self.num_experts)).nonzero(as_tuple=True)  # [P], [P]
        out = torch.zeros_like(x)  # [N, D]
        if token.numel() == 0:
            return out
        pair_idx = local[token, slot][:, None]  # [P, 1] each own (token, expert) pair as a top-1 row
        pair_w = topk_w[token, slot][:, None]  # [P, 1]
        pairs = super().forward(x.index_select(0, token), pair_idx, pair_w)  # type: ignore[misc]  # [P, D]
        return out.index_add_(0, token, pairs)

    def supports_cuda_graphs(self, device: torch.device) -> bool:
        return False  # picking out the own pairs (nonzero) syncs with the host


class DenseExpertShard(_ExpertShard, DenseExperts):
    """`DenseExperts` holding experts first_expert..first_expert+num_experts-1."""


class Int4ExpertShard(_ExpertShard, Int4Experts):
    """`Int4Experts` (packed) holding experts first_expert..first_expert+num_experts-1."""


def _split_experts(moe: MoE, rank: int, world_size: int, key: str, narrows: dict[str, Narrow]) -> None:
    old = moe.experts
    count = old.num_experts // world_size
    with torch.device("meta"):
        if isinstance(old, Int4Experts):
            shard: nn.Module = Int4ExpertShard(count, old.dim, old.hidden_dim, old.group_size)
        elif isinstance(old, DenseExperts):
            shard = DenseExpertShard(count, old.dim, old.hidden_dim).to(old.w13.dtype)
        else:
            raise ParallelConfigError(f"expert storage {type(old).__name__} cannot be split across ranks yet")
    shard.first_expert = rank * count
    moe.experts = shard
    narrows[key] = Narrow(0, rank * count, count)


def attach_collectives(model: nn.Module, comm: Communicator) -> None:
    """The all-reduces after each row-parallel block and the all-gather of vocab-split
    logits, as forward hooks: one per attention, one per MLP or MoE layer."""

    def all_reduce(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return comm.all_reduce(output)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(all_reduce)
        layer.mlp.register_forward_hook(all_reduce)
    if model.lm_head.out_features != model.config.vocab_size:
        model.lm_head.register_forward_hook(lambda _m, _i, logits: comm.all_gather_last(logits))


def load_model_shard(path: str | Path, *, dtype: torch.dtype, device: torch.device, rank: int, world_size: int, comm: Communicator) -> nn.Module:
    """Rank `rank`'s part of the checkpoint in `path`, collectives attached."""
    config = ModelConfig.from_path(path)
    model = build_meta_model(config, dtype)
    narrows = shard_model(model, rank, world_size)
    model = materialize(model, device)
    load_weights(model, Path(path), narrows)
    attach_collectives(model, comm)
    return model


# -- collectives ----------------------------------------------------------------------


class Communicator:
    """One rank's collectives over its own process group (no torch.distributed globals)."""

    def __init__(self, group: Any, rank: int, world_size: int) -> None:
        self.group, self.rank, self.world_size = group, rank, world_size

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        self._group().allreduce([tensor]).wait()
        return tensor

    def all_gather_last(self, tensor: torch.Tensor) -> torch.Tensor:
        """[..., X] on every rank -> [..., world_size * X], rank order."""
        if tensor.numel() == 0:  # every rank has the same rows: all skip together
            return tensor.new_empty(*tensor.shape[:-1], tensor.shape[-1] * self.world_size)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._group().allgather([parts], [tensor.contiguous()]).wait()
        return torch.cat(parts, dim=-1)

    def close(self) -> None:
        self.group = None  # freed now, not at interpreter exit (gloo aborts if torn down late)

    def _group(self) -> Any:
        if self.group is None:
            raise WorkerError("the tensor-parallel group is closed")
        return self.group


def make_process_group(store_path: str, rank: int, world_size: int, device: torch.device) -> Any:
    from torch.distributed import FileStore

    store = FileStore(store_path, world_size)
    timeout = datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    if device.type == "cuda":  # not exercised by the CPU test suite
        from torch.distributed import ProcessGroupNCCL

        options = ProcessGroupNCCL.Options()
        options._timeout = timeout
        return ProcessGroupNCCL(store, rank, world_size, options)
    from torch.distributed import ProcessGroupGloo

    options = ProcessGroupGloo._Options()
    options._devices = [ProcessGroupGloo.create_device(hostname="127.0.0.1")]  # one machine: loopback
    options._timeout = timeout
    return ProcessGroupGloo(store, rank, world_size, options)


def rank_device(device: torch.device, rank: int) -> torch.device:
    """cuda:k for rank 0 means cuda:k+r for rank r; CPU ranks share the CPU."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", (device.index or 0) + rank)
