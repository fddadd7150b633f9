"""Retries with backoff, and a concurrency limit that adapts to rate limiting.

`RetryingModel` wraps any `ChatModel`: retryable errors (429, 5xx, timeouts) are tried
again after an exponential backoff with full jitter, or after the server's `Retry-After`
when it sends one. Every attempt passes through an `AdaptiveLimiter`: when rate limits
persist (a call is rate-limited on a retry too), the number of calls in flight is halved;
after a run of successes it grows back by one, up to its ceiling (additive increase,
multiplicative decrease, as TCP does). A call that failed after handing tool calls on
mid-stream (`CallContext.on_tool_call`) is not tried again: they are already running.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from swarm.errors import ModelError, RateLimited, RetryableModelError
from swarm.messages import Message, ToolCall, ToolSpec
from swarm.model import CallContext, ChatModel, ModelResponse


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After is capped, not obeyed blindly

    def delay_s(self, attempt: int, error: RetryableModelError, rng: random.Random) -> float:
        """The wait before attempt `attempt + 1`."""
        if error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.0), self.max_retry_after_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return rng.uniform(0.0, ceiling)


class AdaptiveLimiter:
    """A capacity limiter whose size shrinks under rate limiting and grows back."""

    def __init__(self, ceiling: int, *, successes_to_grow: int = 20) -> None:
        self.ceiling = ceiling
        self._limiter = anyio.CapacityLimiter(ceiling)
        self._successes_to_grow = successes_to_grow
        self._successes = 0
        self.num_decreases = 0

    @property
    def limit(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def in_flight(self) -> int:
        return self._limiter.borrowed_tokens

    async def __aenter__(self) -> AdaptiveLimiter:
        try:  # a free slot is taken without the two scheduling checkpoints of `acquire`
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self._limiter.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.release()

    def on_persistent_rate_limit(self) -> None:
        self._successes = 0
        new_limit = max(1, self.limit // 2)
        if new_limit < self.limit:
            self._limiter.total_tokens = new_limit
            self.num_decreases += 1

    def on_success(self) -> None:
        self._successes += 1
        if self._successes >= self._successes_to_grow and self.limit < self.ceiling:
            self._successes = 0
            self._limiter.total_tokens = self.limit + 1


AttemptObserver = Callable[[int, float, ModelResponse | None, ModelError | None], None]
"""Called after each attempt with (attempt, started_at, response, error)."""


class RetryingModel:
    """A `ChatModel` that retries its inner model and limits calls in flight."""

    def __init__(
        self,
        inner: ChatModel,
        *,
        policy: RetryPolicy = RetryPolicy(),
        limiter: AdaptiveLimiter | None = None,
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.limiter = limiter
        self._rng = random.Random(seed)
        self._sleep = sleep

    @property
    def name(self) -> str:
        return self.inner.name

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        context: CallContext,
        *,
        on_attempt: AttemptObserver | None = None,
    ) -> ModelResponse:
        attempt = 0
        early: list[ToolCall] = []  # calls handed on mid-stream by any attempt
        if context.on_tool_call is not None:
            on_tool_call = context.on_tool_call

            def hand_on(call: ToolCall) -> None:
                early.append(call)
                on_tool_call(call)

            context = replace(context, on_tool_call=hand_on)
        while True:
            attempt += 1
            started_at = time.time()
            try:
                response = await self._attempt(messages, tools, context)
            except RetryableModelError as error:
                if on_attempt is not None:
                    on_attempt(attempt, started_at, None, error)
                if early:  # its tool calls are running: another attempt would start them again
                    raise type(error)(
                        f"{error} (not tried again: {len(early)} of its tool calls had started)",
                        retry_after_s=error.retry_after_s,
                    ) from error
                if isinstance(error, RateLimited) and attempt > 1 and self.limiter is not None:
                    self.limiter.on_persistent_rate_limit()
                if attempt >= self.policy.max_attempts:
                    raise type(error)(
                        f"{error} (gave up after {attempt} attempts)", retry_after_s=error.retry_after_s
                    ) from error
                await self._sleep(self.policy.delay_s(attempt, error, self._rng))
                continue
            except ModelError as error:
                if on_attempt is not None:
                    on_attempt(attempt, started_at, None, error)
                raise
            if self.limiter is not None:
                self.limiter.on_success()
            if on_attempt is not None:
                on_attempt(attempt, started_at, response, None)
            return response

    async def _attempt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext
    ) -> ModelResponse:
        if self.limiter is None:
            return await self.inner.complete(messages, tools, context)
        async with self.limiter:
            return await self.inner.complete(messages, tools, context)
