"""What the engine hands back: per-request outputs and engine-wide counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestOutput:
    """A request's state after a step: the whole output so far plus this step's delta."""

    request_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]  # output tokens so far
    text: str  # output text so far (stop strings cut, held-back text not yet included)
    delta_text: str
    delta_token_ids: list[int]
    finished: bool
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache


@dataclass
class EngineStats:
    """Counters since the engine started; `prefix_cache_hit_rate` over prompt tokens."""

    num_requests: int = 0
    num_prompt_tokens: int = 0
    num_prefill_tokens_computed: int = 0  # prompt tokens run through the model (recompute included)
    num_generated_tokens: int = 0
    num_steps: int = 0
    num_preemptions: int = 0
    num_draft_tokens: int = 0  # speculative decoding: tokens proposed, and those the model agreed with
    num_accepted_draft_tokens: int = 0
    prefix_cache_queried_tokens: int = 0
    prefix_cache_hit_tokens: int = 0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hit_tokens / self.prefix_cache_queried_tokens if self.prefix_cache_queried_tokens else 0.0
