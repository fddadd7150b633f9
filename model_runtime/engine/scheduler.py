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

With a `NgramProposer` (engine/speculative.py), a greedy decoding sequence also runs
draft tokens in its step when budget and free blocks allow (never preempting for them);
`postprocess` keeps the ones the model agrees with.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from model_runtime.engine.block_manager import BlockManager
from model_runtime.engine.sequence import Sequence, SequenceStatus
from model_runtime.engine.speculative import NgramProposer, num_accepted


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
    draft: tuple[int, ...] = ()  # proposed tokens after the sequence's last, run as decode rows (counted in num_new_tokens)

    @classmethod
    def of(cls, seq: Sequence, num_new_tokens: int) -> ScheduledSeq:
        start = seq.num_computed_tokens
        return cls(seq, num_new_tokens, start, start + num_new_tokens == seq.num_tokens)

    @property
    def input_token_ids(self) -> list[int]:
        """The tokens this step runs: the sequence's own, then the draft."""
        if self.draft:
            return [self.seq.token_ids[self.start], *self.draft]
        return self.seq.token_ids[self.start : self.start + self.num_new_tokens]

    @property
    def num_sampled(self) -> int:
        """Tokens sampled for it this step: one per draft token, plus one (0 for a prompt chunk)."""
        return len(self.draft) + 1 if self.is_sampled else 0


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager, proposer: NgramProposer | None = None) -> None:
        self.config = config
        self.block_manager = block_manager
        self.proposer = proposer
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.num_draft_tokens = 0
        self.num_accepted_draft_tokens = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.config.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        is_preempted = False
        running = list(self.running)
        for index, seq in enumerate(running):
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
            is_decoding = seq.num_tokens - seq.num_computed_tokens == 1
            draft = self._draft(seq, budget, num_after=len(running) - index - 1) if is_decoding else ()
            scheduled.append(ScheduledSeq(seq, 1 + len(draft), seq.num_computed_tokens, True, draft) if draft else ScheduledSeq.of(seq, num_new))
            budget -= num_new + len(draft)
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

    def _draft(self, seq: Sequence, budget: int, num_after: int) -> tuple[int, ...]:
        """Draft tokens for a decoding greedy sequence that fit the budget, its limits and
        the free blocks less one for each of the `num_after` running sequences scheduled
        after it (so that no draft costs another a preemption); () when there is no
        proposer or no proposal."""
        if self.proposer is None or not seq.params.is_greedy:
            return ()
        limit = min(budget - 1, seq.params.max_tokens - seq.num_output_tokens - 1, self.config.max_model_len - seq.num_tokens - 1)
        draft = self.proposer.propose(seq.seq_id, seq.token_ids, limit) if limit > 0 else []
        manager = self.block_manager
        while draft and manager.blocks_needed(seq.num_tokens + len(draft)) - len(seq.block_table) > manager.num_free_blocks - num_after:
            draft.pop()
        if draft:
            manager.grow(seq, seq.num_tokens + len(draft))
        return tuple(draft)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def postprocess(self, scheduled: list[ScheduledSeq], sampled: list[int], eos_token_ids: frozenset[int]) -> list[Sequence]:
        """Advances the scheduled sequences, appends sampled tokens (`num_sampled` per
        scheduled sequence, in order: of a drafted one, the tokens up to the first the
        draft got wrong) and finishes those that hit a stop token or their length."""
        samples = iter(sampled)
        finished: list[Sequence] = []
        for item in scheduled:
            seq = item.seq
            tokens = [next(samples) for _ in range(item.num_sampled)]
            accepted = num_accepted(item.draft, tokens)
            if item.draft:
                self.num_draft_tokens += len(item.draft)
                self.num_accepted_draft_tokens += accepted
            reason = None
            for token in tokens[: accepted + 1]:
                seq.token_ids.append(token)
                reason = self._stop_reason(seq, token, eos_token_ids)
                if reason:
                    break
            # Computed: the step's own tokens and the accepted drafts (the rejected ones' cache slots are overwritten later).
            seq.num_computed_tokens = min(item.start + item.num_new_tokens - len(item.draft) + accepted, seq.num_tokens)
            self.block_manager.commit(seq)
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
        if self.proposer is not None:
            self.proposer.forget(seq.seq_id)
