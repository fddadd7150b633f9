"""Tensor and expert parallelism: a pass over a built model, and the worker processes.

`LLM(path, tensor_parallel_size=N)` runs the model on N ranks: the calling process is
rank 0 and starts N-1 worker processes. Every rank builds the whole model on the meta
device, `shard_model` narrows it to the rank's part, the loader reads only that part
from disk (safetensors slices, only the rank's experts), and `attach_collectives` adds
the collectives as forward hooks (as gpt-fast does): the model file never learns it is
sharded. What rank r of N holds:

    attention      q_proj / q_b_proj and kv_b_proj: its H/N heads' rows (column-parallel).
                   q_a_proj, kv_a_proj_with_mqa and their norms: whole, so every rank
                   computes the same latent and keeps its own copy of the paged latent
                   cache, written to the slots rank 0's block manager chose. o_proj: its
                   heads' input columns (row-parallel), output all-reduced; bias on rank 0.
    dense MLP,     gate/up: I/N rows; down: I/N columns; output all-reduced.
    shared experts
    routed experts E/N whole experts (expert-parallel; INT4 experts stay packed). The
                   router is replicated, so every rank knows every token's experts and
                   computes the weighted sum over its own; ONE all-reduce per MoE layer
                   combines the ranks' routed and shared-expert partial sums.
    embedding      replicated (a lookup: cheap, and no collective).
    lm_head        V/N vocabulary rows, logits all-gathered; replicated when tied.

Processes. Rank 0 keeps the scheduler, the block manager and the sampler. Commands go
to each worker over its stdin pipe (length-prefixed pickles: init, cache, step,
logits, stop; EOF means rank 0 is gone); replies (joining, loaded, ready, error) come
back on a pipe of its own. Tensors move over torch.distributed process groups made
directly (no global default group): gloo on CPU, NCCL on CUDA, meeting through a
FileStore in a fresh temporary directory (no ports, no shared-memory names). Each step
rank 0 sends the scheduled sequences (their new tokens and block tables) to every
worker, then every rank runs the same `ModelRunner.run`; workers drop their logits.

Shutdown. `close()` sends stop, waits, then terminates and kills. A worker that dies
or raises makes rank 0's collective fail; rank 0 turns that into `WorkerError` naming
the rank (and its exception), and kills the other workers. Workers exit on EOF of their
stdin or when their parent process changes (rank 0 killed). An atexit hook kills
workers rank 0 never closed. Workers run in their own session and ignore SIGINT, so a
terminal's Ctrl-C reaches rank 0 only, which then shuts them down.

Not here yet: several nodes, a vocabulary-split embedding, all-to-all token dispatch
for experts (the all-reduce combine moves N x the bytes an all-to-all would), and
overlap of communication with compute.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from model_runtime.config import ModelConfig
from model_runtime.engine.errors import WorkerError
from model_runtime.engine.runner import CacheShape, ModelRunner
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.scheduler import ScheduledSeq
from model_runtime.engine.sequence import Sequence
from model_runtime.errors import ParallelConfigError
from model_runtime.layers.mlp import SwiGLU
from model_runtime.layers.moe import DenseExperts, MoE
from model_runtime.loader import Narrow, build_meta_model, load_weights, materialize
from model_runtime.quant.int4 import Int4Experts

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 1800  # one step's collectives; idle workers wait on their pipe, not here
START_TIMEOUT_S = 1800  # a worker's load of its shard (a real checkpoint takes minutes)
STOP_TIMEOUT_S = 10


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


# -- steps as workers receive them ----------------------------------------------------


@dataclass(frozen=True)
class StepSeq:
    """What a worker needs of one scheduled sequence: its new tokens and block table."""

    seq_id: int
    start: int
    num_new_tokens: int
    is_sampled: bool
    tokens: list[int]  # token_ids[start : start + num_new_tokens]
    block_table: list[int]  # blocks covering positions 0 .. start + num_new_tokens - 1

    @classmethod
    def of(cls, item: ScheduledSeq, block_size: int) -> StepSeq:
        end = item.start + item.num_new_tokens
        seq = item.seq
        return cls(seq.seq_id, item.start, item.num_new_tokens, item.is_sampled, seq.token_ids[item.start : end], seq.block_table[: -(-end // block_size)])

    def scheduled(self) -> ScheduledSeq:
        seq = Sequence(self.seq_id, _TokenWindow(self.start, self.tokens), _WORKER_PARAMS, num_prompt_tokens=1, block_table=self.block_table)  # type: ignore[arg-type]
        return ScheduledSeq(seq, self.num_new_tokens, self.start, self.is_sampled)


_WORKER_PARAMS = SamplingParams(temperature=0)


class _TokenWindow:
    """A sequence's tokens start.. as the runner indexes them (by position); any other
    index is a bug and fails loudly instead of reading a wrong token."""

    def __init__(self, start: int, tokens: list[int]) -> None:
        self.start, self.tokens = start, tokens

    def __len__(self) -> int:
        return self.start + len(self.tokens)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            if key.step is not None or key.start is None or key.start < self.start or (key.stop or 0) > len(self):
                raise IndexError(f"a worker holds tokens {self.start}..{len(self) - 1} only, not {key}")
            return self.tokens[key.start - self.start : key.stop - self.start]
        if not self.start <= key < len(self):
            raise IndexError(f"a worker holds tokens {self.start}..{len(self) - 1} only, not {key}")
        return self.tokens[key - self.start]


class _DiscardingSampler:
    """Workers compute logits (the lm_head's all-gather needs every rank) but only rank 0 samples."""

    def __call__(self, *_args: Any) -> list[int]:
        return []

    def forget(self, _request_id: int) -> None:
        pass


# -- rank 0: the group of workers ------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    path: str
    dtype: str
    device: str
    rank: int
    world_size: int
    store_path: str
    num_threads: int


@dataclass
class _Worker:
    rank: int
    process: subprocess.Popen
    commands: BinaryIO
    replies: BinaryIO


class TensorParallelGroup:
    """Rank 0's side: starts the workers, loads its own shard, sends steps, shuts down."""

    def __init__(self, path: str | Path, *, dtype: torch.dtype, device: str | torch.device, world_size: int) -> None:
        self.path, self.dtype, self.world_size = str(path), dtype, world_size
        self.device = rank_device(torch.device(device), 0)
        check_parallel_config(ModelConfig.from_path(path), world_size)
        self._lock = threading.Lock()
        self._is_closed = False
        self.workers: list[_Worker] = []
        self._tmpdir = tempfile.mkdtemp(prefix="moe-swarm-tp-")
        atexit.register(self._kill)
        try:
            self._start()
        except BaseException:
            self._kill()
            raise

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def _start(self) -> None:
        store_path = os.path.join(self._tmpdir, "store")
        threads = max(1, (os.cpu_count() or 1) // self.world_size)
        for rank in range(1, self.world_size):
            self.workers.append(_spawn(rank))
            spec = WorkerSpec(self.path, str(self.dtype).removeprefix("torch."), str(rank_device(self.device, rank)), rank, self.world_size, store_path, threads)
            self._send(self.workers[-1], ("init", spec))
        for worker in self.workers:
            self._expect(worker, "joining", START_TIMEOUT_S)
        self.comm = Communicator(make_process_group(store_path, 0, self.world_size, self.device), 0, self.world_size)
        self.model = load_model_shard(self.path, dtype=self.dtype, device=self.device, rank=0, world_size=self.world_size, comm=self.comm)
        free = [self._expect(worker, "loaded", START_TIMEOUT_S)[1] for worker in self.workers]
        self.min_free_bytes = min([torch.cuda.mem_get_info(self.device)[0], *free]) if self.device.type == "cuda" else 0

    def runner(self, model: nn.Module, cache: CacheShape, *, dtype: torch.dtype, device: torch.device, seed: int | None = None) -> DriverRunner:
        """Rank 0's model runner; every worker allocates the same cache and waits for steps."""
        runner = DriverRunner(self, model, cache, dtype=dtype, device=device, seed=seed)
        for worker in self.workers:
            self._send(worker, ("cache", cache))
        for worker in self.workers:
            self._expect(worker, "ready", START_TIMEOUT_S)
        return runner

    def broadcast(self, command: tuple[Any, ...]) -> None:
        for worker in self.workers:
            self._send(worker, command)

    def failed(self, cause: BaseException) -> BaseException:
        """The error to raise after a collective or a send failed: `WorkerError` naming the
        worker that died or raised (waiting briefly for it to show), else `cause`. Kills
        all workers either way."""
        reason = None
        deadline = time.monotonic() + 3.0
        while reason is None and time.monotonic() < deadline:
            reason = next((r for w in self.workers if (r := self._poll_failure(w))), None)
            time.sleep(0.02)
        self._kill()
        return WorkerError(f"tensor-parallel worker {reason}") if reason else cause

    def close(self) -> None:
        """Stops the workers (politely, then by force); idempotent."""
        with self._lock:
            if self._is_closed:
                return
            self._is_closed = True
        for worker in self.workers:
            try:
                _write(worker.commands, ("stop",))
                worker.commands.close()
            except OSError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("tensor-parallel worker rank %d did not stop; killing it", worker.rank)
        self._kill()

    def _kill(self) -> None:
        """Ends every worker now (atexit, failures, after close's grace period)."""
        self._is_closed = True
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
        for worker in self.workers:
            worker.process.wait()
            for pipe in (worker.commands, worker.replies):
                try:
                    pipe.close()
                except OSError:
                    pass
        comm = getattr(self, "comm", None)
        if comm is not None:
            comm.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        atexit.unregister(self._kill)

    def _send(self, worker: _Worker, command: tuple[Any, ...]) -> None:
        try:
            _write(worker.commands, command)
        except (OSError, ValueError) as exc:  # ValueError: the pipe was closed already
            raise WorkerError(f"tensor-parallel worker rank {worker.rank} is gone ({exc})") from exc

    def _expect(self, worker: _Worker, kind: str, timeout_s: float) -> tuple[Any, ...]:
        """Waits for `worker`'s next reply, which must be `kind`; a worker that dies or
        reports an error raises `WorkerError`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([worker.replies], [], [], 0.1)
            if readable:
                reply = _read(worker.replies)
                if reply is not None and reply[0] == kind:
                    return reply
                self._kill()
                if reply is not None and reply[0] == "error":
                    raise WorkerError(f"tensor-parallel worker rank {worker.rank} failed: {reply[1]}")
                raise WorkerError(f"tensor-parallel worker rank {worker.rank} {_exit_reason(worker.process.wait())}")
            if worker.process.poll() is not None and not select.select([worker.replies], [], [], 0)[0]:
                self._kill()
                raise WorkerError(f"tensor-parallel worker rank {worker.rank} {_exit_reason(worker.process.returncode)}")
        self._kill()
        raise WorkerError(f"tensor-parallel worker rank {worker.rank} did not report {kind!r} within {timeout_s:.0f} s")

    def _poll_failure(self, worker: _Worker) -> str | None:
        try:
            if select.select([worker.replies], [], [], 0)[0]:
                reply = _read(worker.replies)
                if reply is not None and reply[0] == "error":
                    return f"rank {worker.rank} failed: {reply[1]}"
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass
        code = worker.process.poll()
        return None if code is None else f"rank {worker.rank} {_exit_reason(code)}"


class DriverRunner(ModelRunner):
    """Rank 0's `ModelRunner`: sends each step to the workers, then runs it with them."""

    def __init__(self, group: TensorParallelGroup, model: nn.Module, cache: CacheShape, **kwargs: Any) -> None:
        super().__init__(model, cache, **kwargs)
        self.group = group

    def run(self, scheduled: list[ScheduledSeq]) -> list[int]:
        return self._together(("step", [StepSeq.of(item, self.block_size) for item in scheduled]), lambda: super(DriverRunner, self).run(scheduled))

    def whole_sequence_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`model(input_ids [B, T])` on all ranks: logits `[B, T, V]` (tests, debugging).
        Only while the engine is idle: it shares the process group with the steps."""
        return self._together(("logits", input_ids.cpu()), lambda: self.model(input_ids.to(self.device)))

    def close(self) -> None:
        self.group.close()

    def _together(self, command: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        try:
            self.group.broadcast(command)
            return compute()
        except Exception as exc:  # a send or a collective failed: most likely a worker died or raised
            error = self.group.failed(exc)
            if error is exc:
                raise
            raise error from exc


def _spawn(rank: int) -> _Worker:
    read_fd, write_fd = os.pipe()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from model_runtime.parallel import worker_main; worker_main()", str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,  # a terminal's Ctrl-C goes to rank 0, which stops us in order
            env=env,
        )
    finally:
        os.close(write_fd)
    return _Worker(rank, process, process.stdin, os.fdopen(read_fd, "rb"))  # type: ignore[arg-type]


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _write(pipe: BinaryIO, message: tuple[Any, ...]) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(struct.pack("<Q", len(payload)) + payload)
    pipe.flush()


def _read(pipe: BinaryIO) -> tuple[Any, ...] | None:
    """The next message, or None at EOF."""
    header = pipe.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    payload = pipe.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)  # noqa: S301 - our own parent process, over a private pipe


# -- the worker process -----------------------------------------------------------------


def worker_main() -> None:
    """Entry point of a worker process (`python -c ... <reply fd>`); never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when we stop
    replies = os.fdopen(int(sys.argv[1]), "wb")
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    code = 0
    try:
        _serve(sys.stdin.buffer, replies)
    except BaseException as exc:  # noqa: BLE001 - reported to rank 0, then exit
        traceback.print_exc()
        try:
            _write(replies, ("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: a process group destroyed late can abort


def _serve(commands: BinaryIO, replies: BinaryIO) -> None:
    message = _read(commands)
    if message is None:
        return
    spec: WorkerSpec = message[1]
    torch.set_num_threads(spec.num_threads)
    device, dtype = torch.device(spec.device), getattr(torch, spec.dtype)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _write(replies, ("joining",))
    comm = Communicator(make_process_group(spec.store_path, spec.rank, spec.world_size, device), spec.rank, spec.world_size)
    model = load_model_shard(spec.path, dtype=dtype, device=device, rank=spec.rank, world_size=spec.world_size, comm=comm)
    _write(replies, ("loaded", torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0))
    runner: ModelRunner | None = None
    while (message := _read(commands)) is not None and message[0] != "stop":
        kind = message[0]
        if kind == "cache":
            runner = ModelRunner(model, message[1], dtype=dtype, device=device)
            runner.sampler = _DiscardingSampler()  # type: ignore[assignment]
            _write(replies, ("ready",))
        elif kind == "step":
            assert runner is not None, "a step before the cache"
            runner.run([item.scheduled() for item in message[1]])
        elif kind == "logits":
            model(message[1].to(device))
        else:
            raise WorkerError(f"unknown command {kind!r}")


def _exit_when_orphaned(parent_pid: int) -> None:
    """Rank 0 killed outright (no EOF yet, or we are inside a collective): exit too."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
