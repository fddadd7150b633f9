"""The processes: rank 0's `TensorParallelGroup` (starts workers, sends them commands,
shuts them down) and `DriverRunner`, and `worker_main`, a worker's whole life.

Commands (rank 0 -> worker, on its stdin): init, cache, step, logits, stop. Replies
(worker -> rank 0, on a pipe of its own): joining, loaded, ready, error. Both are
length-prefixed pickles between a parent and its own child.
"""

from __future__ import annotations

import atexit
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
from model_runtime.parallel.sharding import Communicator, check_parallel_config, load_model_shard, make_process_group, rank_device

log = logging.getLogger(__name__)

START_TIMEOUT_S = 1800  # a worker's load of its shard (a real checkpoint takes minutes)
STOP_TIMEOUT_S = 10


# -- steps as workers receive them ----------------------------------------------------


@dataclass(frozen=True)
class StepSeq:
    """What a worker needs of one scheduled sequence: its new tokens and block table."""

    seq_id: int
    start: int
    num_new_tokens: int
    is_sampled: bool
    tokens: list[int]  # token_ids[start : start + num_new_tokens - len(draft)]
    block_table: list[int]  # blocks covering positions 0 .. start + num_new_tokens - 1
    draft: tuple[int, ...] = ()

    @classmethod
    def of(cls, item: ScheduledSeq, block_size: int) -> StepSeq:
        end = item.start + item.num_new_tokens
        seq = item.seq
        tokens = seq.token_ids[item.start : end - len(item.draft)]
        return cls(seq.seq_id, item.start, item.num_new_tokens, item.is_sampled, tokens, seq.block_table[: -(-end // block_size)], item.draft)

    def scheduled(self) -> ScheduledSeq:
        seq = Sequence(self.seq_id, _TokenWindow(self.start, self.tokens), _WORKER_PARAMS, num_prompt_tokens=1, block_table=self.block_table)  # type: ignore[arg-type]
        return ScheduledSeq(seq, self.num_new_tokens, self.start, self.is_sampled, self.draft)


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
        self.rendezvous_dir = tempfile.mkdtemp(prefix="moe-swarm-tp-")
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
        store_path = os.path.join(self.rendezvous_dir, "store")
        threads = max(1, (os.cpu_count() or 1) // self.world_size)
        for rank in range(1, self.world_size):
            self.workers.append(_spawn(rank))
            spec = WorkerSpec(self.path, str(self.dtype).removeprefix("torch."), str(rank_device(self.device, rank)), rank, self.world_size, store_path, threads)
            self._send(self.workers[-1], ("init", spec))
        for worker in self.workers:
            self._expect(worker, "joining", START_TIMEOUT_S)
        self.comm = Communicator(make_process_group(store_path, 0, self.world_size, self.device), 0, self.world_size)
        if self.device.type == "cuda":
            threading.Thread(target=self._abort_when_a_worker_dies, name="tp-watchdog", daemon=True).start()
        self.model = load_model_shard(self.path, dtype=self.dtype, device=self.device, rank=0, world_size=self.world_size, comm=self.comm)
        free = [self._expect(worker, "loaded", START_TIMEOUT_S)[1] for worker in self.workers]
        self.min_free_bytes = min([torch.cuda.mem_get_info(self.device)[0], *free]) if self.device.type == "cuda" else 0

    def runner(self, model: nn.Module, cache: CacheShape, *, dtype: torch.dtype, device: torch.device, seed: int | None = None) -> DriverRunner:
        """Rank 0's model runner; every worker allocates the same cache and waits for steps."""
        # Eager on every rank: CUDA graphs capturing NCCL collectives are not tried yet, and
        # every rank must take the same path through `ModelRunner.run`.
        runner = DriverRunner(self, model, cache, dtype=dtype, device=device, seed=seed, enforce_eager=True)
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
        shutil.rmtree(self.rendezvous_dir, ignore_errors=True)
        atexit.unregister(self._kill)

    def _abort_when_a_worker_dies(self) -> None:
        """NCCL collectives do not notice a dead peer (gloo's fail at once): abort the
        group so that rank 0's collective fails now rather than at the timeout."""
        while not self._is_closed:
            if any(w.process.poll() is not None for w in self.workers):
                group = self.comm.group
                if group is not None and not self._is_closed:
                    group.abort()
                return
            time.sleep(0.2)

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
            [sys.executable, "-c", "from model_runtime.parallel.workers import worker_main; worker_main()", str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            stdout=2,  # our stdout is the parent's stderr: `swarm run --json` owns its stdout
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
    parent_pid = os.getppid()
    init = _read(sys.stdin.buffer)
    if init is None:
        os._exit(0)
    spec: WorkerSpec = init[1]
    rendezvous_dir = os.path.dirname(spec.store_path)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, rendezvous_dir), daemon=True).start()
    code, is_stopped = 0, False
    try:
        is_stopped = _serve(spec, sys.stdin.buffer, replies)
    except BaseException as exc:  # noqa: BLE001 - reported to rank 0, then exit
        traceback.print_exc()
        try:
            _write(replies, ("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        code = 1
    if not is_stopped:
        _clean_up_if_orphaned(parent_pid, rendezvous_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: a process group destroyed late can abort


def _serve(spec: WorkerSpec, commands: BinaryIO, replies: BinaryIO) -> bool:
    """Runs commands until stop (returns True) or EOF (False)."""
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
            runner = ModelRunner(model, message[1], dtype=dtype, device=device, enforce_eager=True)  # as rank 0's
            runner.sampler = _DiscardingSampler()  # type: ignore[assignment]
            _write(replies, ("ready",))
        elif kind == "step":
            assert runner is not None, "a step before the cache"
            runner.run([item.scheduled() for item in message[1]])
        elif kind == "logits":
            model(message[1].to(device))
        else:
            raise WorkerError(f"unknown command {kind!r}")
    return message is not None


def _exit_when_orphaned(parent_pid: int, rendezvous_dir: str) -> None:
    """Rank 0 killed outright (no EOF yet, or we are inside a collective): exit too."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    shutil.rmtree(rendezvous_dir, ignore_errors=True)
    os._exit(1)


def _clean_up_if_orphaned(parent_pid: int, rendezvous_dir: str, wait_s: float = 1.0) -> None:
    """Rank 0 gone without stopping us (killed): no one else will remove the rendezvous
    directory. The kernel may close rank 0's sockets a moment before it reparents us."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if os.getppid() != parent_pid:
            shutil.rmtree(rendezvous_dir, ignore_errors=True)
            return
        time.sleep(0.05)
