"""Each limit trips with a clear stop reason in the trace."""

from __future__ import annotations

import time

import pytest

from swarm.limits import Limits
from swarm.summary import run_summary
from swarm.testing.fake_openai import Reply, SwarmBrain

pytestmark = pytest.mark.anyio


async def test_max_subagents_refuses_further_launches_as_observations(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=4))
    outcome = await harness.run(limits=Limits(max_subagents=2))
    assert outcome.status == "succeeded"
    agents = harness.store.agents(outcome.run_id)
    assert sum(a.role == "subagent" for a in agents) == 2
    errors = [c.error for c in harness.store.tool_calls(outcome.run_id) if c.status == "error"]
    assert len(errors) == 2 and all("max_subagents (2) reached" in e for e in errors)


async def test_max_tool_calls_stops_the_run_over_budget(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=3, subagent_tool_calls=5))
    outcome = await harness.run(limits=Limits(max_tool_calls=6))
    assert outcome.status == "budget_exceeded"
    assert outcome.stop_reason == "max_tool_calls (6) reached"
    assert outcome.num_tool_calls == 6
    summary = run_summary(harness.store, outcome.run_id)
    assert summary["status"] == "budget_exceeded"
    assert summary["stop_reason"] == "max_tool_calls (6) reached"
    assert {a["status"] for a in summary["agents"]} == {"budget_exceeded"}
    assert not harness.kit.open_agents  # every agent's tools were released


async def test_max_concurrency_caps_running_subagents(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=6, latency_s=0.1))
    started = time.perf_counter()
    outcome = await harness.run(limits=Limits(max_concurrency=2))
    assert outcome.status == "succeeded"
    assert harness.server.max_in_flight == 2
    assert time.perf_counter() - started >= 0.3 + 3 * 0.1  # three waves of two


async def test_subagent_max_steps_stops_only_that_subagent(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=2, subagent_tool_calls=3))
    outcome = await harness.run(limits=Limits(subagent_max_steps=2))
    assert outcome.status == "succeeded"
    subagents = [a for a in harness.store.agents(outcome.run_id) if a.role == "subagent"]
    assert {a.status for a in subagents} == {"budget_exceeded"}
    assert all(a.steps == 2 for a in subagents)
    assert "subagent_max_steps (2) reached without a final answer" in outcome.final_answer


async def test_orchestrator_max_steps(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=1))
    outcome = await harness.run(limits=Limits(orchestrator_max_steps=2))
    assert outcome.status == "budget_exceeded"
    assert outcome.stop_reason == "orchestrator_max_steps (2) reached without a final answer"
    assert outcome.critical_steps == 1 + 2


async def test_timeout_cancels_everything(make_harness) -> None:
    harness = make_harness(SwarmBrain(tasks=["SLOW one", "SLOW two"], slow_delay_s=5.0))
    started = time.perf_counter()
    outcome = await harness.run(limits=Limits(timeout_s=0.5))
    assert time.perf_counter() - started < 3.0
    assert outcome.status == "budget_exceeded"
    assert outcome.stop_reason == "timeout_s (0.5) elapsed"
    statuses = {a.status for a in harness.store.agents(outcome.run_id)}
    assert statuses == {"budget_exceeded"}
    assert not harness.kit.open_agents


async def test_output_token_budget(make_harness) -> None:
    harness = make_harness(lambda body: Reply(tool_calls=[("echo", {"text": "x" * 400})]))
    outcome = await harness.run(mode="single", limits=Limits(max_output_tokens=50))
    assert outcome.status == "budget_exceeded"
    assert outcome.stop_reason.startswith("max_output_tokens (50) exceeded")
    roles = [m.role for m in harness.store.messages(outcome.run_id)]
    assert roles[-1] == "assistant"  # the reply that went over budget is recorded
    assert outcome.critical_steps == roles.count("assistant") == 6  # and counts as a step


async def test_kits_holding_task_groups_close_cleanly_when_the_run_is_cut_short(make_harness) -> None:
    """A kit that keeps a task group open (as browser proxies and MCP sessions do) must be
    closed in the scope it was entered in, also when a timeout cancels the run."""
    from contextlib import asynccontextmanager

    import anyio

    from swarm.testing.echo_kit import EchoKit, EchoTool

    class TaskGroupKit(EchoKit):
        async def __aenter__(self):
            self._group = anyio.create_task_group()
            await self._group.__aenter__()
            self._group.start_soon(anyio.sleep_forever)
            return self

        async def __aexit__(self, *exc_info):
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)

        @asynccontextmanager
        async def for_agent(self, agent_id):
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep_forever)
                self.open_agents.add(agent_id)
                try:
                    yield [EchoTool()]
                finally:
                    self.open_agents.discard(agent_id)
                    group.cancel_scope.cancel()

    harness = make_harness(SwarmBrain(tasks=["SLOW one", "SLOW two"], slow_delay_s=5.0))
    harness.kit = TaskGroupKit()
    outcome = await harness.run(limits=Limits(timeout_s=0.5))
    assert outcome.status == "budget_exceeded"
    assert not harness.kit.open_agents
