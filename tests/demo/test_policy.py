"""The reference policy: the generated conversations follow it, and it runs the real demo end to end."""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from demo.policy import PolicyChatModel, next_turn
from demo.run import describe, run_demo
from demo.trajectories import ORCHESTRATOR_PROMPT, sample_conversation
from storage.store import TraceStore
from swarm.messages import Message as SwarmMessage
from swarm.messages import ToolSpec
from swarm.model import CallContext, ModelResponse


def test_every_generated_turn_is_the_policys_next_turn() -> None:
    rng = random.Random(5)
    for n in range(80):
        messages = sample_conversation(rng, miss=0.3 if n % 2 else 0.0).messages  # misses: "not found" rows
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                assert next_turn(messages[:i]) == message


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_demo_runs_both_modes_through_the_real_swarm_and_browser(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db")
    result = run_demo(seed=3, num_entities=3, model=PolicyChatModel(), store=store)
    assert result["status"] == "succeeded" and result["accuracy"] == 1.0
    assert result["single_agent"]["accuracy"] == 1.0
    assert result["critical_steps"] == 5  # (1 + 3 sub-agent steps) + the table
    assert result["single_agent"]["critical_steps"] == 2 * 3 + 1
    assert len(result["agents"]) == 4 and len(result["ground_truth"]) == 6
    assert "speedup" in result and result["run_id"] in describe(result)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_with_a_simulated_web_latency_the_swarms_lookups_wait_together(tmp_path: Path) -> None:
    """A remote site's latency (`--web-latency`): the single agent waits for its 2 x 4
    requests in turn, the swarm's sub-agents for theirs at once."""
    store = TraceStore(tmp_path / "traces.db")
    result = run_demo(seed=3, num_entities=4, model=PolicyChatModel(), store=store, web_latency_s=0.3)
    assert result["accuracy"] == 1.0 and result["single_agent"]["accuracy"] == 1.0
    assert result["web_latency_s"] == 0.3 and "simulated latency" in describe(result)
    assert result["single_agent"]["wall_time_s"] >= 8 * 0.3
    assert result["wall_time_s"] >= 2 * 0.3 and result["speedup"] > 1.5


class _DroppingLastRow(PolicyChatModel):
    """The policy, except that the orchestrator's table leaves out its last row."""

    async def complete(self, messages: Sequence[SwarmMessage], tools: Sequence[ToolSpec], context: CallContext) -> ModelResponse:
        response = await super().complete(messages, tools, context)
        if messages[0].content == ORCHESTRATOR_PROMPT and not response.message.tool_calls:
            table = "\n".join((response.message.content or "").splitlines()[:-1])
            return replace(response, message=response.message.model_copy(update={"content": table}))
        return response


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_subagent_accuracy_scores_the_sub_agents_answers_apart_from_the_table(tmp_path: Path) -> None:
    result = run_demo(seed=3, num_entities=4, model=_DroppingLastRow(), store=TraceStore(tmp_path / "traces.db"), modes=("swarm",))
    assert result["accuracy"] == 0.75 and result["subagent_accuracy"] == 1.0
    assert "(the sub-agents' answers 100%)" in describe(result)
