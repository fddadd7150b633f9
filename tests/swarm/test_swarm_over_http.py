"""The swarm end to end against a real HTTP server on loopback speaking the OpenAI protocol."""

from __future__ import annotations

import json
import time

import pytest

from storage.models import ModelCallRow
from swarm.limits import Limits
from swarm.summary import run_summary
from swarm.testing.fake_openai import Reply, SwarmBrain

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stream", [True, False])
async def test_assign_task_calls_of_one_turn_run_in_parallel(make_harness, stream: bool) -> None:
    harness = make_harness(SwarmBrain(num_subagents=5, latency_s=0.3))
    started = time.perf_counter()
    outcome = await harness.run(stream=stream)
    wall_s = time.perf_counter() - started

    assert outcome.status == "succeeded"
    # 3 orchestrator calls + 5 sub-agent calls at 0.3 s each: 2.4 s in series, 1.2 s in parallel.
    assert wall_s < 2.0
    assert harness.server.max_in_flight == 5
    assert outcome.final_answer is not None
    for i in range(5):
        assert f"result for part {i}" in outcome.final_answer
    assert outcome.critical_steps == 4  # (1) + (1 + 1) + (1)


async def test_subagent_result_is_its_final_answer_only(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=1, subagent_tool_calls=2))
    outcome = await harness.run()
    assert outcome.status == "succeeded"
    tool_messages = [
        m for m in harness.store.messages(outcome.run_id, f"{outcome.run_id}.0") if m.role == "tool"
    ]
    assert tool_messages[-1].content == "result for part 0"  # no trajectory, no echo results
    assert outcome.critical_steps == 1 + (1 + 3) + 1


async def test_trace_reads_back_every_agent_message_model_call_and_tool_call(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=2, subagent_tool_calls=1))
    outcome = await harness.run()
    store, run_id = harness.store, outcome.run_id

    summary = run_summary(store, run_id)
    assert summary["status"] == "succeeded"
    assert [a["role"] for a in summary["agents"]] == ["orchestrator", "subagent", "subagent"]
    assert all(a["parent_id"] == f"{run_id}.0" for a in summary["agents"][1:])
    assert summary["num_tool_calls"] == 1 + 2 + 2  # create, 2 assigns, one echo each
    assert summary["critical_steps"] == outcome.critical_steps == 1 + 3 + 1

    calls = store.tool_calls(run_id)
    assert sorted(c.tool for c in calls) == ["assign_task", "assign_task", "create_subagent", "echo", "echo"]
    assert all(c.status == "ok" and c.duration_s is not None for c in calls)
    assert {c.call_id for c in calls if c.tool == "assign_task"} == {"functions.assign_task:0", "functions.assign_task:1"}

    model_calls = store.model_calls(run_id)
    assert len(model_calls) == 3 + 2 * 2
    assert all(c.status == "ok" and c.input_tokens > 0 and c.output_tokens > 0 for c in model_calls)
    assert all(c.ttft_s is not None for c in model_calls)
    assert summary["usage"]["input_tokens"] == sum(c.input_tokens for c in model_calls)

    messages = store.messages(run_id, f"{run_id}.1")
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert json.loads(messages[2].tool_calls_json)[0]["name"] == "echo"


async def test_retries_429_and_500_then_succeeds(make_harness) -> None:
    brain = SwarmBrain(tasks=["RATE limited", "ERR500 once", "plain"], rate_limit_times=2)
    harness = make_harness(brain)
    outcome = await harness.run()

    assert outcome.status == "succeeded"
    agents = {a.task: a for a in harness.store.agents(outcome.run_id)}
    rate_calls = harness.store.model_calls(outcome.run_id, agents["RATE limited"].id)
    assert [(c.attempt, c.status) for c in rate_calls] == [(1, "error"), (2, "error"), (3, "ok")]
    assert "429" in (rate_calls[0].error or "")
    err_calls = harness.store.model_calls(outcome.run_id, agents["ERR500 once"].id)
    assert [(c.attempt, c.status) for c in err_calls] == [(1, "error"), (2, "ok")]
    assert "500" in (err_calls[0].error or "")


async def test_one_failing_subagent_does_not_take_down_its_siblings(make_harness) -> None:
    harness = make_harness(SwarmBrain(tasks=["alpha", "FAIL beta", "gamma"], latency_s=0.05))
    outcome = await harness.run()

    assert outcome.status == "succeeded"
    by_task = {a.task: a for a in harness.store.agents(outcome.run_id)}
    assert by_task["alpha"].status == by_task["gamma"].status == "succeeded"
    assert by_task["FAIL beta"].status == "failed"
    assert "400" in (by_task["FAIL beta"].stop_reason or "")
    assert "result for alpha" in outcome.final_answer and "result for gamma" in outcome.final_answer
    assert "failed" in outcome.final_answer  # the failure came back as the call's result
    failed_call = [c for c in harness.store.tool_calls(outcome.run_id) if c.status == "error"]
    assert len(failed_call) == 1 and failed_call[0].tool == "assign_task"


async def test_malformed_arguments_and_unknown_tools_go_back_to_the_model(make_harness) -> None:
    def brain(body):
        tool_results = [m for m in body["messages"] if m["role"] == "tool"]
        if not tool_results:
            return Reply(tool_calls=[("echo", "{not json"), ("teleport", {}), ("echo", "[1, 2]")])
        return Reply(content=" | ".join(m["content"] for m in tool_results))

    harness = make_harness(brain)
    outcome = await harness.run(mode="single")

    assert outcome.status == "succeeded"
    answer = outcome.final_answer
    assert "not valid JSON" in answer
    assert "unknown tool 'teleport'" in answer and "available tools: echo" in answer
    assert "must be a JSON object" in answer
    assert [c.status for c in harness.store.tool_calls(outcome.run_id)] == ["error"] * 3


async def test_single_mode_has_no_swarm_tools(make_harness) -> None:
    harness = make_harness(lambda body: Reply(content=",".join(sorted(t["function"]["name"] for t in body["tools"]))))
    outcome = await harness.run(mode="single")
    assert outcome.final_answer == "echo"
    summary = run_summary(harness.store, outcome.run_id)
    assert [a["role"] for a in summary["agents"]] == ["orchestrator"]
    assert outcome.critical_steps == 1


async def test_secrets_never_reach_the_database(make_harness, tmp_path) -> None:
    secret = "sk-test-0123456789abcdef"

    def leaky(body):  # a model that repeats its key back, as a prompt-injected one might
        return Reply(content=f"my key is {secret}")

    harness = make_harness(leaky, api_key=secret)
    outcome = await harness.run(prompt=f"the key {secret} is here too", mode="single", api_key=secret)
    assert outcome.status == "succeeded"
    assert harness.server.headers_seen[0]["authorization"] == f"Bearer {secret}"
    harness.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("traces.db*"))
    assert secret.encode() not in raw
    assert b"[REDACTED]" in raw


async def test_model_errors_in_the_orchestrator_fail_the_run_with_a_reason(make_harness) -> None:
    harness = make_harness(lambda body: Reply(status=401, error="no such key"))
    outcome = await harness.run()
    assert outcome.status == "failed"
    assert "401" in outcome.stop_reason and "no such key" in outcome.stop_reason
    calls = harness.store.model_calls(outcome.run_id)
    assert len(calls) == 1  # 4xx is not retried


async def test_persistent_server_errors_give_up_after_max_attempts(make_harness) -> None:
    harness = make_harness(lambda body: Reply(status=503, error="overloaded"))
    outcome = await harness.run(mode="single")
    assert outcome.status == "failed"
    assert "gave up after 4 attempts" in outcome.stop_reason
    rows = harness.store.rows(ModelCallRow, outcome.run_id)
    assert [r.attempt for r in rows] == [1, 2, 3, 4]


async def test_cancelling_one_subagent_leaves_its_siblings_running(make_harness) -> None:
    import anyio

    from swarm.backends.openai_compat import OpenAIChatModel
    from swarm.backends.retry import RetryingModel
    from swarm.coordinator import Coordinator, RunRequest
    from swarm.recorder import Recorder

    harness = make_harness(SwarmBrain(tasks=["SLOW doomed", "quick"], slow_delay_s=30, latency_s=0.3))
    model = RetryingModel(OpenAIChatModel(harness.server.base_url, model_name="fake-kimi", api_key=None))
    with Recorder(harness.store) as recorder:
        coordinator = Coordinator(RunRequest(prompt="p"), model, [harness.kit], recorder)
        async with anyio.create_task_group() as group:

            async def cancel_the_slow_one() -> None:
                while True:
                    slow = [a for a in coordinator.state.agents.values() if a.name == "worker" and a.status == "running"]
                    if len(slow) == 2:
                        break
                    await anyio.sleep(0.02)
                doomed = next(a for a in coordinator.state.agents.values() if a.id.endswith(".1"))
                assert coordinator.cancel_agent(doomed.id, "not needed")

            group.start_soon(cancel_the_slow_one)
            with anyio.fail_after(10):
                outcome = await coordinator.run()
        recorder.flush()
    await model.aclose()
    assert outcome.status == "succeeded"
    assert "was cancelled: not needed" in outcome.final_answer
    assert "result for quick" in outcome.final_answer
    statuses = {a.task: a.status for a in harness.store.agents(outcome.run_id)}
    assert statuses == {"p": "succeeded", "SLOW doomed": "cancelled", "quick": "succeeded"}


@pytest.mark.parametrize("stream", [True, False])
async def test_calls_reuse_their_http_connection(make_harness, stream: bool) -> None:
    def brain(body):
        turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return Reply(tool_calls=[("echo", {"text": str(turns)})]) if turns < 5 else Reply(content="done")

    harness = make_harness(brain)
    outcome = await harness.run(mode="single", stream=stream)
    assert outcome.status == "succeeded"
    assert len(harness.server.client_ports) == 6
    assert len(set(harness.server.client_ports)) == 1  # one keep-alive connection for all six calls
