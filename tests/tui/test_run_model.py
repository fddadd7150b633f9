"""`RunModel`: the same run read from live events and from database rows gives the same view."""

from __future__ import annotations

from storage.store import TraceStore
from swarm.events import TextDelta
from swarm.messages import Message
from swarm.events import MessageAdded
from tests.tui.conftest import record
from tui.db_source import RunPoller
from tui.run_model import RunModel
from tui.synthetic import synthetic_events


def live_model(**options: object) -> RunModel:
    model = RunModel("r1")
    for event in synthetic_events("r1", **options):  # type: ignore[arg-type]
        model.apply(event)
    model.take_changes()
    return model


def test_live_events_and_stored_rows_give_the_same_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = TraceStore(tmp_path / "t.db")
    record(store, synthetic_events("r1", num_subagents=4, calls_per_agent=3))
    stored = RunModel("r1")
    poller = RunPoller(store, "r1")
    poller.apply(stored, poller.fetch())
    stored.take_changes()
    live = live_model(num_subagents=4, calls_per_agent=3)
    assert stored.figures() == live.figures()
    assert stored.order == live.order
    assert [len(stored.messages[a]) for a in stored.order] == [len(live.messages[a]) for a in live.order]
    assert poller.is_finished


def test_a_run_caught_midway_counts_steps_and_running_agents() -> None:
    model = live_model(num_subagents=3, calls_per_agent=2, is_finished=False)
    figures = model.figures(now=1_700_000_010.0)
    assert (figures.status, figures.num_agents, figures.num_active) == ("running", 4, 4)
    assert figures.elapsed_s == 10.0
    assert [model.agents[a].steps for a in model.order] == [2, 2, 2, 2]
    assert figures.critical_steps == 1 + (1 + 2)  # step 1, then step 2 waiting on 2-step sub-agents
    running_calls = [c for c in model.tool_calls.values() if c.status == "running"]
    assert len(running_calls) == 3 + 3  # three assign_task calls, each sub-agent's last echo


def test_streamed_text_collects_until_the_message_arrives() -> None:
    model = live_model(num_subagents=1, calls_per_agent=0, is_finished=False)
    agent = "r1.1"
    for piece in ("Hel", "lo"):
        model.apply(TextDelta(run_id="r1", at=0.0, agent_id=agent, text=piece))
    changes = model.take_changes()
    assert changes.streamed == {agent} and model.streaming[agent] == "Hello"
    model.apply(MessageAdded(run_id="r1", at=0.0, agent_id=agent, seq=2, message=Message(role="assistant", content="Hello")))
    assert agent not in model.streaming
    assert model.take_changes().messages == {agent}
