"""The scheduler: which sequences run this step, and how many tokens each; no torch.

Every sequence is treated alike: it has `num_tokens` and `num_computed_tokens`, and a
step computes up to the difference (a whole prompt, a chunk of a long one, or the one
new token of a decoding sequence) within a token budget. Running sequences go first,
in arrival order, so decodes never starve behind prefills; waiting ones are admitted
while budget, sequence slots and free blocks last. When blocks run out, the most
recently admitted running sequence is preempted: its blocks are freed and it waits at
the head of the queue to be recomputed (its full blocks stay in the prefix cache, so
recomputing is often cheap). A waiting request whose prefix another request is
prefilling right now waits for it, then reuses its blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from model_runtime.engine.block_manager import BlockManager
from model_runtime.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048  # the token budget of one step
    max_model_len: int = 4096


@dataclass(frozen=True)
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int
    start: int  # num_computed_tokens when scheduled
    is_sampled: bool  # this step reaches the sequence's end, so it samples a token

    @classmethod
    def of(cls, seq: Sequence, num_new_tokens: int) -> ScheduledSeq:
        start = seq.num_computed_tokens
        return cls(seq, num_new_tokens, start, start + num_new_tokens == seq.num_tokens)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.config.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        is_preempted = False
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted below
                continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            target = seq.num_computed_tokens + num_new
            while not self.block_manager.can_grow(seq, target):
                self._preempt(self.running[-1])
                is_preempted = True
                if seq.status is not SequenceStatus.RUNNING:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            self.block_manager.grow(seq, target)
            scheduled.append(ScheduledSeq.of(seq, num_new))
            budget -= num_new
        for seq in list(self.waiting):
            if budget == 0 or is_preempted or len(self.running) >= self.config.max_num_seqs:
                break
            if self.block_manager.is_prefix_pending(seq):
                continue  # its prefix is being prefilled now: join once it is cached
            if not self.block_manager.can_allocate(seq):
                break
            self.waiting.remove(seq)
            self.block_manager.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            scheduled.append(ScheduledSeq.of(seq, num_new))
            budget -= num_new
        return scheduled

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def postprocess(self, scheduled: list[ScheduledSeq], sampled: list[int], eos_token_ids: frozenset[int]) -> list[Sequence]:
        """Advances the scheduled sequences, appends sampled tokens (one per sampled
        sequence, in order) and finishes those that hit a stop token or their length."""
        samples = iter(sampled)
        finished: list[Sequence] = []
        for item in scheduled:
            seq = item.seq
            is_sampled = item.is_sampled
            seq.num_computed_tokens = item.start + item.num_new_tokens
            self.block_manager.commit(seq)
            if not is_sampled:
                continue
            token = next(samples)
            seq.token_ids.append(token)
            reason = self._stop_reason(seq, token, eos_token_ids)
            if reason:
                self.finish(seq, reason)
                finished.append(seq)
        return finished

    def _stop_reason(self, seq: Sequence, token: int, eos_token_ids: frozenset[int]) -> str | None:
        params = seq.params
        if seq.num_output_tokens >= params.min_tokens:
            if token in params.stop_token_ids or (not params.ignore_eos and token in eos_token_ids):
                return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.config.max_model_len:
            return "length"
        return None

    def finish(self, seq: Sequence, reason: str) -> None:
        """Ends a sequence (stop, length, a stop string found by the engine, or abort)."""
        if seq.is_finished:
            return
        if seq in self.running:
            self.running.remove(seq)
            self.block_manager.free_sequence(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
