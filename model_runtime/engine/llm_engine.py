"""`LLMEngine`: the synchronous core, one `step()` at a time.

A step asks the scheduler what to run, runs it, lets the scheduler advance the
sequences, and turns the result into outputs (text deltas, stop strings). It is not
thread-safe; `LLM` drives it from one loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from model_runtime.engine.block_manager import BlockManager
from model_runtime.engine.errors import InvalidRequestError
from model_runtime.engine.outputs import EngineStats, RequestOutput
from model_runtime.engine.runner import ModelRunner
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.scheduler import ScheduledSeq, Scheduler
from model_runtime.engine.sequence import Sequence
from model_runtime.tokenizer import IncrementalDecoder, KimiTokenizer

OutputSink = Callable[[RequestOutput], None]
logger = logging.getLogger(__name__)


@dataclass
class _Request:
    seq: Sequence
    prompt_token_ids: list[int]
    sink: OutputSink | None
    decoder: IncrementalDecoder | None
    text: str = ""  # decoded output, stop strings already cut
    num_emitted_chars: int = 0
    num_emitted_tokens: int = 0
    stopped_by_string: bool = False
    stop_holdback: int = 0
    is_streamed: bool = True  # False: one output, when it finishes (its delta is everything)


class LLMEngine:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner, tokenizer: KimiTokenizer | None, eos_token_ids: frozenset[int]) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.requests: dict[int, _Request] = {}
        self.stats = EngineStats()
        self._next_id = 0

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, sink: OutputSink | None = None, *, request_id: int | None = None, is_streamed: bool = True) -> int:
        """Queues a request. Streamed, it gets an output on every step that produced
        something; not streamed, only the finished one (no per-step output to build)."""
        self.validate(prompt_token_ids, params)
        if request_id is None:
            request_id, self._next_id = self._next_id, self._next_id + 1
        seq = Sequence(request_id, list(prompt_token_ids), params)
        decoder = IncrementalDecoder(self.tokenizer) if self.tokenizer else None
        holdback = max((len(s) for s in params.stop), default=1) - 1
        self.requests[request_id] = _Request(seq, list(prompt_token_ids), sink, decoder, stop_holdback=holdback, is_streamed=is_streamed)
        self.scheduler.add(seq)
        self.stats.num_requests += 1
        self.stats.num_prompt_tokens += len(prompt_token_ids)
        return request_id

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[RequestOutput]:
        scheduled = self.scheduler.schedule()
        sampled = self.runner.run(scheduled)
        num_tokens_before = [item.seq.num_tokens for item in scheduled]
        self.scheduler.postprocess(scheduled, sampled, self.eos_token_ids)
        return self._outputs(scheduled, num_tokens_before)

    def abort(self, request_id: int) -> None:
        request = self.requests.pop(request_id, None)
        if request is not None:
            self.scheduler.finish(request.seq, "abort")
            self.runner.sampler.forget(request_id)

    def validate(self, prompt: list[int], params: SamplingParams) -> None:
        """Raises `InvalidRequestError` for a request this engine cannot serve."""
        config = self.scheduler.config
        if not prompt:
            raise InvalidRequestError("the prompt is empty")
        vocab = self.runner.vocab_size
        if vocab is not None and not all(0 <= t < vocab for t in prompt):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
        if len(prompt) >= config.max_model_len:
            raise InvalidRequestError(f"the prompt has {len(prompt)} tokens; this engine takes at most {config.max_model_len - 1}")
        manager = self.scheduler.block_manager
        if manager.blocks_needed(len(prompt) + 1) > manager.num_blocks:
            raise InvalidRequestError(f"the prompt has {len(prompt)} tokens, more than the whole KV cache holds")
        if params.stop and self.tokenizer is None:
            raise InvalidRequestError("stop strings need a tokenizer; this engine has none")

    def _outputs(self, scheduled: list[ScheduledSeq], num_tokens_before: list[int]) -> list[RequestOutput]:
        stats = self.stats
        stats.num_steps += 1
        stats.num_preemptions = self.scheduler.num_preemptions
        stats.num_draft_tokens, stats.num_accepted_draft_tokens = self.scheduler.num_draft_tokens, self.scheduler.num_accepted_draft_tokens
        cache_stats = self.scheduler.block_manager.stats
        stats.prefix_cache_queried_tokens, stats.prefix_cache_hit_tokens = cache_stats.num_queried_tokens, cache_stats.num_hit_tokens
        outputs = []
        for item, num_before in zip(scheduled, num_tokens_before, strict=True):
            seq = item.seq
            request = self.requests.get(seq.seq_id)
            if request is None:
                continue
            stats.num_prefill_tokens_computed += max(0, min(item.start + item.num_new_tokens, seq.num_prompt_tokens) - item.start)
            if seq.num_tokens > num_before:
                self._decode_new_tokens(request, seq.num_tokens - num_before)  # may drop tokens drafted past a stop string
            stats.num_generated_tokens += seq.num_tokens - num_before  # it keeps the first new one at least
            output = self._emit(request)
            if output is not None:
                outputs.append(output)
        return outputs

    def _decode_new_tokens(self, request: _Request, num_new: int) -> None:
        seq = request.seq
        if request.decoder is None or request.stopped_by_string:
            return
        if not request.is_streamed and not seq.params.stop:  # no one reads the text before the end: decode it once then
            if seq.is_finished:
                tokens = seq.output_token_ids
                request.text = self.tokenizer.decode(tokens[:-1] if self._ends_on_stop_token(seq) else tokens)  # type: ignore[union-attr]
            return
        first_new = seq.num_tokens - num_new
        for i in range(first_new, seq.num_tokens):
            num_old_chars = len(request.text)
            is_last = i == seq.num_tokens - 1
            if not (is_last and self._ends_on_stop_token(seq)):
                request.text += request.decoder.push(seq.token_ids[i])
            if is_last and seq.is_finished:
                request.text += request.decoder.flush()
            if not seq.params.stop:
                continue
            # Earlier text was searched already: only a match reaching into the new text is new.
            found = [j for stop in seq.params.stop if (j := request.text.find(stop, max(0, num_old_chars - len(stop) + 1))) != -1]
            if found:
                request.text = request.text[: min(found)]
                request.stopped_by_string = True
                del seq.token_ids[i + 1 :]  # tokens drafted past the stop string were never written
                self.scheduler.finish(seq, "stop")
                seq.finish_reason = "stop"  # also when its length ran out on this very token
                return

    def _ends_on_stop_token(self, seq: Sequence) -> bool:
        token = seq.token_ids[-1]
        return seq.finish_reason == "stop" and (token in seq.params.stop_token_ids or token in self.eos_token_ids)

    def _emit(self, request: _Request) -> RequestOutput | None:
        seq = request.seq
        finished = seq.is_finished
        if not finished and not request.is_streamed:
            return None
        visible = len(request.text) if finished else max(request.num_emitted_chars, len(request.text) - request.stop_holdback)
        output_ids = seq.output_token_ids  # a fresh list: handed out as is
        delta_tokens = output_ids[request.num_emitted_tokens :]
        if not delta_tokens and not finished and visible == request.num_emitted_chars:
            return None
        output = RequestOutput(
            request_id=seq.seq_id,
            prompt_token_ids=request.prompt_token_ids,  # shared, not copied: read-only
            token_ids=output_ids,
            text=request.text[:visible],
            delta_text=request.text[request.num_emitted_chars : visible],
            delta_token_ids=delta_tokens,
            finished=finished,
            finish_reason=seq.finish_reason,
            num_cached_tokens=seq.num_cached_tokens,
        )
        request.num_emitted_chars, request.num_emitted_tokens = visible, len(output_ids)
        if finished:
            del self.requests[seq.seq_id]
            self.runner.sampler.forget(seq.seq_id)
        if request.sink is not None:
            try:
                request.sink(output)
            except Exception:  # noqa: BLE001 - a caller gone away (closed event loop) must not stop the engine
                logger.warning("request %d: its output sink failed; aborting it", seq.seq_id, exc_info=True)
                self.abort(seq.seq_id)
        return output
