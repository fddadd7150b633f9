from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.store import TraceStore
from swarm.backends.openai_compat import OpenAIChatModel
from swarm.backends.retry import AdaptiveLimiter, RetryingModel, RetryPolicy
from swarm.coordinator import Coordinator, RunOutcome, RunRequest
from swarm.limits import Limits
from swarm.recorder import Recorder
from swarm.testing.echo_kit import EchoKit
from swarm.testing.fake_openai import Brain, FakeOpenAIServer

FAST_RETRIES = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Harness:
    """A swarm wired as the CLI wires it, against a fake server on loopback."""

    server: FakeOpenAIServer
    store: TraceStore
    kit: EchoKit

    async def run(
        self,
        prompt: str = "do the task",
        *,
        mode: str = "swarm",
        limits: Limits | None = None,
        stream: bool = True,
        api_key: str | None = None,
        policy: RetryPolicy = FAST_RETRIES,
    ) -> RunOutcome:
        limits = limits or Limits()
        model = OpenAIChatModel(self.server.base_url, model_name="fake-kimi", api_key=api_key, stream=stream)
        retrying = RetryingModel(model, policy=policy, limiter=AdaptiveLimiter(limits.max_concurrency + 1), seed=0)
        request = RunRequest(prompt=prompt, mode=mode, limits=limits, model_label=f"openai:{self.server.base_url}")  # type: ignore[arg-type]
        with Recorder(self.store, secrets=[api_key] if api_key else []) as recorder:
            coordinator = Coordinator(request, retrying, [self.kit], recorder)
            try:
                outcome = await coordinator.run()
            finally:
                await retrying.aclose()
            recorder.flush()
        return outcome


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[callable]:
    servers: list[FakeOpenAIServer] = []

    def make(brain: Brain, **server_options: object) -> Harness:
        server = FakeOpenAIServer(brain, **server_options).__enter__()  # type: ignore[arg-type]
        servers.append(server)
        return Harness(server=server, store=TraceStore(tmp_path / "traces.db"), kit=EchoKit())

    yield make
    for server in servers:
        server.__exit__(None, None, None)
