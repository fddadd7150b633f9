"""`LLM`: the engine as users see it, sync `generate` and async `stream`.

One loop thread owns the `LLMEngine` and steps it while any request is live; callers
on any thread post requests and aborts to its inbox (validated first, so bad
requests fail in the caller) and receive outputs through per-request sinks, so
requests from many agents or HTTP clients share each step's batch and no caller ever
waits for a step to finish. The loop thread starts on first use; `close()` stops it.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model_runtime.engine.block_manager import BlockManager
from model_runtime.engine.errors import EngineClosedError, InvalidRequestError
from model_runtime.engine.llm_engine import LLMEngine, OutputSink
from model_runtime.engine.outputs import EngineStats, RequestOutput
from model_runtime.engine.runner import CacheShape, ModelRunner
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.scheduler import Scheduler, SchedulerConfig
from model_runtime.engine.speculative import NgramProposer
from model_runtime.tokenizer import KimiTokenizer

Prompt = str | Sequence[int]


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: from kv_cache_bytes (CPU) or free GPU memory
    kv_cache_bytes: int = 1 << 30
    gpu_memory_utilization: float = 0.9  # share of the free GPU memory the cache takes
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None  # None: the model's max_position_embeddings, at most 32768
    enable_prefix_caching: bool = True
    seed: int | None = None
    enforce_eager: bool = False  # True: no CUDA graphs for decode steps (they are CUDA-only anyway)
    # CPU: intra-op threads of the engine's own loop thread (None: 1 for a model of at most
    # SMALL_MODEL_MAX_PARAMS parameters, else torch's setting). OpenMP keeps this per
    # thread, so the caller's threads keep theirs. A small model's steps are hundreds of
    # tiny operations that a second thread slows down, more so beside other busy
    # processes (a browser, a swarm): 1 made `swarm demo` about 30% faster here, and the
    # tiny model's decode steps about 1.5x faster on a 2-core machine sharing a core.
    cpu_threads: int | None = None
    # Speculative decoding of greedy requests with n-gram drafts from the request's own
    # tokens (engine/speculative.py): at most this many draft tokens a step; 0 turns it off.
    num_speculative_tokens: int = 0


SMALL_MODEL_MAX_PARAMS = 10_000_000  # up to this, one engine thread by default (see cpu_threads)


def engine_cpu_threads(config: EngineConfig, model: torch.nn.Module) -> int | None:
    """The loop thread's intra-op threads on CPU: the configured count, else 1 for a small
    model, else None (torch's setting)."""
    if config.cpu_threads is not None:
        return config.cpu_threads
    num_params = sum(p.numel() for p in model.parameters())
    return 1 if num_params <= SMALL_MODEL_MAX_PARAMS else None


class LoopMailbox:
    """Hands items from other threads to one asyncio loop, one wake-up a batch: each
    `call_soon_threadsafe` writes to the loop's self-pipe, and an engine step whose batch
    streams to 16 agents of one loop would write 16 times. `post` from any thread; the
    deliveries run on the loop, in the order posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not kept alive by its entry in LLM._mailboxes
        self._lock = threading.Lock()
        self._items: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._is_scheduled = False

    def post(self, deliver: Callable[[Any], None], item: Any) -> None:
        with self._lock:
            self._items.append((deliver, item))
            if self._is_scheduled:
                return
            self._is_scheduled = True
        try:
            loop = self._loop()
            if loop is None:
                raise RuntimeError("the event loop is gone")
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is left to deliver to
            with self._lock:
                self._items.clear()
                self._is_scheduled = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._is_scheduled = False
        for deliver, item in items:
            deliver(item)


class LLM:
    def __init__(self, path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: str = "cpu", tensor_parallel_size: int = 1, config: EngineConfig | None = None) -> None:
        tokenizer = KimiTokenizer.from_dir(path) if (Path(path) / "tiktoken.model").is_file() else None
        if tensor_parallel_size != 1:  # worker processes; see model_runtime/parallel/
            from model_runtime.parallel import TensorParallelGroup

            group = TensorParallelGroup(path, dtype=dtype, device=device, world_size=tensor_parallel_size)
            try:
                self._setup(group.model, tokenizer, config or EngineConfig(), dtype=dtype, device=group.device, group=group)
            except BaseException:
                group.close()
                raise
            return
        from model_runtime import load_model  # the model issue's loader; heavy, so late

        model = load_model(path, dtype=dtype, device=device)
        self._setup(model, tokenizer, config or EngineConfig(), dtype=dtype, device=torch.device(device))

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: KimiTokenizer | None, config: EngineConfig | None = None, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LLM:
        """An engine around an already-built model (tests, benchmarks, custom loaders)."""
        llm = cls.__new__(cls)
        llm._setup(model, tokenizer, config or EngineConfig(), dtype=dtype, device=torch.device(device))
        return llm

    def _setup(self, model: torch.nn.Module, tokenizer: KimiTokenizer | None, config: EngineConfig, *, dtype: torch.dtype, device: torch.device, group: Any = None) -> None:
        model_config = model.config
        entry_dim = model_config.kv_lora_rank + model_config.qk_rope_head_dim
        shape = CacheShape(model_config.num_hidden_layers, 0, config.block_size, entry_dim)
        cache_bytes = config.kv_cache_bytes
        if device.type == "cuda" and config.num_kv_blocks is None:
            free_bytes = group.min_free_bytes if group is not None else torch.cuda.mem_get_info(device)[0]
            cache_bytes = int(free_bytes * config.gpu_memory_utilization)
        num_blocks = config.num_kv_blocks or max(1, cache_bytes // (shape.bytes_per_block * dtype.itemsize))
        shape = CacheShape(shape.num_layers, num_blocks, config.block_size, entry_dim)
        max_model_len = config.max_model_len or min(getattr(model_config, "max_position_embeddings", 32768), 32768)
        self.config = config
        self._device = device
        self._cpu_threads = engine_cpu_threads(config, model) if device.type == "cpu" else None
        self.tokenizer = tokenizer
        eos = {t for t in (tokenizer.eos_token_id, tokenizer.token_id("<|im_end|>")) if t is not None} if tokenizer else set()
        scheduler = Scheduler(
            SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, max_model_len),
            BlockManager(num_blocks, config.block_size, config.enable_prefix_caching),
            NgramProposer(config.num_speculative_tokens) if config.num_speculative_tokens else None,
        )
        if group is not None:  # the parallel runner drives the workers (eager: see parallel/workers.py)
            runner = group.runner(model, shape, dtype=dtype, device=device, seed=config.seed)
        else:
            runner = ModelRunner(model, shape, dtype=dtype, device=device, seed=config.seed, enforce_eager=config.enforce_eager)
        self.engine = LLMEngine(scheduler, runner, tokenizer, frozenset(eos))
        self._thread_lock = threading.Lock()
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None
        self._inbox: deque[tuple[str, Any]] = deque()  # ("add", request) | ("abort", id) | ("reset", reply queue)
        self._has_mail = threading.Event()
        self._request_ids = itertools.count()
        self._error_sinks: dict[int, OutputSink] = {}  # owned by the loop thread
        self._error: BaseException | None = None
        self._is_closed = False

    # -- public API ---------------------------------------------------------------

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError("string prompts need a tokenizer; this checkpoint has none")
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    def generate(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Runs every prompt to completion in shared batches; one output per prompt, in
        order. `params` is one for all prompts or one per prompt."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        per_prompt = list(params) if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise InvalidRequestError(f"{len(per_prompt)} sampling params for {len(prompts)} prompts")
        encoded = [self.encode_prompt(p) for p in prompts]
        for prompt_ids, sp in zip(encoded, per_prompt):  # all or nothing: validate before submitting
            self.engine.validate(prompt_ids, sp)
        done: queue.Queue[RequestOutput | BaseException] = queue.Queue()
        ids = [self.submit(p, sp, done.put, on_error=done.put, is_streamed=False) for p, sp in zip(encoded, per_prompt)]
        results: dict[int, RequestOutput] = {}
        while len(results) < len(ids):
            item = done.get()
            if isinstance(item, BaseException):
                raise EngineClosedError(f"the engine loop stopped: {item}") from item
            results[item.request_id] = item
        return [results[i] for i in ids]

    async def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> AsyncIterator[RequestOutput]:
        """Yields an output per step that produced something, the last one `finished`."""
        mailbox = self._mailbox(asyncio.get_running_loop())
        outputs: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        request_id = self.submit(
            self.encode_prompt(prompt),
            params or SamplingParams(),
            lambda out: mailbox.post(outputs.put_nowait, out),
            on_error=lambda exc: mailbox.post(outputs.put_nowait, exc),
        )
        is_finished = False
        try:
            while not is_finished:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    raise EngineClosedError(f"the engine loop stopped: {item}") from item
                is_finished = item.finished
                yield item
        finally:
            if not is_finished:
                self.abort(request_id)

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> LoopMailbox:
        """The loop's mailbox, shared by every stream on it (so a step wakes it once)."""
        with self._thread_lock:
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = LoopMailbox(loop)
            return mailbox

    def submit(self, prompt_token_ids: list[int], params: SamplingParams, sink: OutputSink, *, on_error: OutputSink | None = None, is_streamed: bool = True) -> int:
        """Posts a request; `sink` gets its outputs on the loop thread (keep it quick):
        one per step that produced something, or with `is_streamed=False` only the
        finished one. `on_error` gets the exception if the loop dies first. Raises on a
        bad request."""
        self._check_open()
        self.engine.validate(prompt_token_ids, params)
        request_id = next(self._request_ids)
        self._post("add", (request_id, list(prompt_token_ids), params, sink, on_error, is_streamed))
        self._check_open()  # the loop may have died or closed while we posted
        return request_id

    def abort(self, request_id: int) -> None:
        if not self._is_closed:
            self._post("abort", request_id)

    def reset_prefix_cache(self) -> bool:
        """Drops the prefix cache (benchmarks, weight reloads); False while requests run."""
        reply: queue.Queue[bool] = queue.Queue()
        self._post("reset", reply)
        return reply.get()

    def close(self) -> None:
        self._is_closed = True
        self._has_mail.set()
        if self._thread is not None:
            self._thread.join()
            if self._error is None:  # callers still waiting hear that it closed
                self._fail_all(EngineClosedError("the engine was closed"))
        close_runner = getattr(self.engine.runner, "close", None)
        if close_runner is not None:  # tensor parallel: stop the worker processes
            close_runner()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop thread ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._is_closed:
            raise EngineClosedError("the engine is closed")
        if self._error is not None:
            raise EngineClosedError(f"the engine loop stopped: {self._error}")

    def _post(self, kind: str, item: Any) -> None:
        self._inbox.append((kind, item))
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="llm-engine", daemon=True)
                self._thread.start()
        self._has_mail.set()

    def _loop(self) -> None:
        if self._cpu_threads is not None:
            torch.set_num_threads(self._cpu_threads)
        while not self._is_closed:
            if not self._inbox and not self.engine.has_work():
                self._has_mail.wait()
                self._has_mail.clear()
            try:
                self._read_inbox()
                if self.engine.has_work():
                    for out in self.engine.step():
                        if out.finished:
                            self._error_sinks.pop(out.request_id, None)
            except BaseException as exc:  # noqa: BLE001 - reported to every waiting caller
                self._fail_all(exc)
                return

    def _read_inbox(self) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "add":
                request_id, prompt, params, sink, on_error, is_streamed = item
                self.engine.add_request(prompt, params, sink, request_id=request_id, is_streamed=is_streamed)
                self._error_sinks[request_id] = on_error or (lambda exc: None)
            elif kind == "abort":
                self.engine.abort(item)
                self._error_sinks.pop(item, None)
            else:
                item.put(self.engine.scheduler.block_manager.reset_prefix_cache())

    def _fail_all(self, exc: BaseException) -> None:
        self._error = exc
        self._read_inbox_for_failure()
        for on_error in self._error_sinks.values():
            try:
                on_error(exc)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001, S110 - that caller is gone already
                pass
        self._error_sinks.clear()
        self.engine.requests.clear()

    def _read_inbox_for_failure(self) -> None:
        """Requests posted after the failure still hear about it."""
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "add" and item[4] is not None:
                self._error_sinks[item[0]] = item[4]
            elif kind == "reset":
                item.put(False)
