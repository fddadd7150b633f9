"""Backoff, Retry-After and adaptive concurrency of `RetryingModel`, without HTTP."""

from __future__ import annotations

import random

import anyio
import httpx
import pytest

from swarm.backends.openai_compat import parse_retry_after
from swarm.backends.retry import AdaptiveLimiter, RetryingModel, RetryPolicy
from swarm.errors import ModelRequestError, ModelUnavailable, RateLimited
from swarm.messages import Message, Usage
from swarm.model import CallContext, ModelResponse

pytestmark = pytest.mark.anyio
CONTEXT = CallContext(agent_id="a", agent_name="a", role="subagent")


class FlakyModel:
    """Fails with the queued errors, then answers."""

    name = "flaky"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    async def complete(self, messages, tools, context) -> ModelResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ModelResponse(message=Message(role="assistant", content="ok"), usage=Usage(), model="flaky")

    async def aclose(self) -> None:
        pass


async def test_retry_after_is_honoured_and_backoff_grows_otherwise() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    inner = FlakyModel([RateLimited("429", retry_after_s=2.5), ModelUnavailable("503"), ModelUnavailable("503")])
    model = RetryingModel(inner, policy=RetryPolicy(base_delay_s=1.0, max_delay_s=30), sleep=sleep, seed=1)
    response = await model.complete([], [], CONTEXT)
    assert response.message.content == "ok"
    assert inner.calls == 4
    assert waits[0] == 2.5
    assert 0 <= waits[1] <= 2.0 and 0 <= waits[2] <= 4.0  # full jitter under 1 s * 2^(n-1)


def test_backoff_ceiling_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    rng = random.Random(0)
    samples = [max(policy.delay_s(6, ModelUnavailable("x"), rng) for _ in range(200))]
    assert 4.0 < samples[0] <= 5.0


async def test_request_errors_are_not_retried() -> None:
    inner = FlakyModel([ModelRequestError("400 bad")])
    model = RetryingModel(inner, policy=RetryPolicy(base_delay_s=0))
    with pytest.raises(ModelRequestError):
        await model.complete([], [], CONTEXT)
    assert inner.calls == 1


async def test_persistent_rate_limits_halve_concurrency_and_successes_restore_it() -> None:
    limiter = AdaptiveLimiter(8, successes_to_grow=2)
    inner = FlakyModel([RateLimited("429"), RateLimited("429"), RateLimited("429")])
    model = RetryingModel(inner, policy=RetryPolicy(base_delay_s=0), limiter=limiter)
    await model.complete([], [], CONTEXT)
    assert limiter.limit == 2  # 8 -> 4 -> 2: the second and third 429s were persistent
    for _ in range(4):
        await model.complete([], [], CONTEXT)
    assert limiter.limit == 4


async def test_lowered_limit_really_caps_calls_in_flight() -> None:
    limiter = AdaptiveLimiter(4)
    limiter.on_persistent_rate_limit()
    peak = 0

    class Slow(FlakyModel):
        async def complete(self, messages, tools, context):
            nonlocal peak
            peak = max(peak, limiter.in_flight)
            await anyio.sleep(0.02)
            return await super().complete(messages, tools, context)

    model = RetryingModel(Slow([]), limiter=limiter)
    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(model.complete, [], [], CONTEXT)
    assert peak == 2


def test_retry_after_header_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert parse_retry_after(httpx.Headers({})) is None
