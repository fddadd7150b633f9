from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.store import TraceStore
from swarm.recorder import Recorder
from swarm.testing.fake_openai import FakeOpenAIServer, SwarmBrain
from tui.synthetic import synthetic_events

SIZE = (120, 40)
OLD_RUN, NEW_RUN = "a1b2c3d4e5f60001", "f6e5d4c3b2a10002"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def record(store: TraceStore, events) -> None:  # type: ignore[no-untyped-def]
    with Recorder(store) as recorder:
        for event in events:
            recorder.emit(event)
        recorder.flush()


@pytest.fixture
def store(tmp_path: Path) -> TraceStore:
    """Two finished runs with fixed times: OLD_RUN (3 sub-agents), NEW_RUN (2, newer)."""
    store = TraceStore(tmp_path / "traces.db")
    record(store, synthetic_events(OLD_RUN, prompt="Survey sorting algorithms\nin detail", num_subagents=3))
    record(store, synthetic_events(NEW_RUN, prompt="Compare two databases", num_subagents=2, t0=1_700_000_100.0))
    return store


@pytest.fixture
def slow_server() -> Iterator[FakeOpenAIServer]:
    """A fake model whose two sub-agents take 30 s per call: runs stay live until cancelled."""
    brain = SwarmBrain(tasks=["SLOW first part", "SLOW second part"], slow_delay_s=30.0)
    with FakeOpenAIServer(brain) as server:
        yield server
        server._server.force_exit = True  # type: ignore[union-attr]  # don't wait out the slow calls


@pytest.fixture
def fast_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(SwarmBrain(num_subagents=2, subagent_tool_calls=1)) as server:
        yield server
