"""Speculative decoding with n-gram drafts (prompt lookup); plain Python, no torch.

An agent's turns copy a lot: a tool call repeats a name from the task, a final table
repeats the rows its tools returned. `NgramProposer` guesses the next tokens of a
greedy sequence by finding the latest earlier place where its last n tokens occurred
(n from `max_ngram` down to `min_ngram`) and proposing what followed there. The
scheduler sends the last token and the draft through one step, each as its own decode
row (row i attends to the context up to itself), and keeps the drafts the model's own
argmax agrees with, plus the model's token after them: the output is what greedy
decoding writes one token a step, in fewer steps. Sampled (non-greedy) requests are
never drafted for.

Each sequence's n-grams are indexed once, as its tokens arrive (a dict per n from
n-gram to the position it ended at), so a proposal is a few dict lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


MAX_SPECULATIVE_TOKENS = 16
"""The most draft tokens a step that the CLI and the task file accept."""


@dataclass
class _Index:
    last_end: list[dict[tuple[int, ...], int]]  # per n - min_ngram: n-gram -> the position its last token is at
    num_indexed: int = 0  # n-grams ending before this position are in `last_end`


@dataclass
class NgramProposer:
    num_tokens: int  # the longest draft
    max_ngram: int = 3
    min_ngram: int = 1
    _indexes: dict[int, _Index] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, not {self.num_tokens}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, not {self.min_ngram} and {self.max_ngram}")

    def propose(self, seq_id: int, token_ids: Sequence[int], limit: int) -> list[int]:
        """Up to `min(limit, num_tokens)` tokens that may follow `token_ids`, or []."""
        limit = min(limit, self.num_tokens)
        num_tokens = len(token_ids)
        if limit < 1 or num_tokens < 2:
            return []
        index = self._indexes.get(seq_id)
        if index is None:
            index = self._indexes[seq_id] = _Index([{} for _ in range(self.min_ngram, self.max_ngram + 1)])
        # Index every n-gram ending before the last token: a match then always has a successor.
        for end in range(index.num_indexed, num_tokens - 1):
            for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
                index.last_end[n - self.min_ngram][tuple(token_ids[end - n + 1 : end + 1])] = end
        index.num_indexed = max(index.num_indexed, num_tokens - 1)
        for n in range(min(self.max_ngram, num_tokens), self.min_ngram - 1, -1):
            end = index.last_end[n - self.min_ngram].get(tuple(token_ids[num_tokens - n :]))
            if end is not None:
                return list(token_ids[end + 1 : end + 1 + limit])
        return []

    def forget(self, seq_id: int) -> None:
        self._indexes.pop(seq_id, None)


def num_accepted(draft: Sequence[int], sampled: Sequence[int]) -> int:
    """How many leading draft tokens the model agrees with: `sampled[i]` is the model's
    token after the last real token and `draft[:i]`."""
    count = 0
    while count < len(draft) and draft[count] == sampled[count]:
        count += 1
    return count
