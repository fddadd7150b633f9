"""Tool calls start while the model is still streaming the turn that makes them
(`CallContext.on_tool_call`): the parser hands each call out once it is whole, the
backends pass them on, the agent starts them, and a retry never starts them twice."""

from __future__ import annotations

import json
import random

import anyio
import pytest

from model_runtime.tool_parser import (
    ARGUMENT_BEGIN,
    CALL_BEGIN,
    CALL_END,
    SECTION_BEGIN,
    SECTION_END,
    StreamingToolParser,
)
from storage.store import TraceStore
from swarm.backends.openai_compat import OpenAIChatModel
from swarm.backends.retry import RetryingModel, RetryPolicy
from swarm.coordinator import Coordinator, RunRequest
from swarm.errors import ModelRequestError, ModelUnavailable
from swarm.limits import Limits
from swarm.messages import Message, ToolCall, Usage
from swarm.model import CallContext, ModelResponse, with_early_calls
from swarm.recorder import Recorder
from swarm.testing.fake_openai import FakeOpenAIServer, Reply, SwarmBrain

pytestmark = pytest.mark.anyio


def kimi_call(name: str, index: int, arguments: dict) -> str:
    return f"{CALL_BEGIN}functions.{name}:{index}{ARGUMENT_BEGIN}{json.dumps(arguments)}{CALL_END}"


def section(*calls: str) -> str:
    return f"I will fan out.{SECTION_BEGIN}{''.join(calls)}{SECTION_END}"


def stream(parser: StreamingToolParser, text: str, rng: random.Random) -> list[tuple[int, str]]:
    """Feeds `text` in random pieces; returns (characters fed so far, call id) as calls come out."""
    handed, fed = [], 0
    while fed < len(text):
        size = rng.randint(1, 12)
        parser.feed(text[fed : fed + size])
        fed = min(len(text), fed + size)
        handed += [(fed, call.id) for call in parser.complete_calls()]
    return handed


@pytest.mark.parametrize("seed", range(20))
def test_the_parser_hands_out_each_call_once_it_is_whole_and_as_finish_parses_it(seed: int) -> None:
    calls = [kimi_call("assign_task", i, {"agent": "w", "task": f"part {i} " * (i + 1)}) for i in range(4)]
    text = section(*calls)
    parser = StreamingToolParser()
    handed = stream(parser, text, random.Random(seed))
    _, parsed = parser.finish()
    assert [call_id for _, call_id in handed] == [call.id for call in parsed.tool_calls]
    assert len(handed) == 4
    for (fed, _), call in zip(handed, calls, strict=True):  # out as soon as its end marker was fed, no sooner
        end = text.index(call) + len(call)
        assert end <= fed < end + 12


def test_a_broken_call_stops_the_hand_out_and_finish_reports_it() -> None:
    broken = f"{CALL_BEGIN}functions.assign_task:1{ARGUMENT_BEGIN}{{not json{CALL_END}"
    text = section(kimi_call("create_subagent", 0, {"name": "w"}), broken, kimi_call("assign_task", 2, {"task": "x"}))
    parser = StreamingToolParser()
    parser.feed(text)
    assert [call.id for call in parser.complete_calls()] == ["functions.create_subagent:0"]
    _, parsed = parser.finish()
    assert parsed.errors and len(parsed.tool_calls) == 3  # finish keeps what it can, as before


def test_calls_inside_unfinished_reasoning_are_not_handed_out() -> None:
    parser = StreamingToolParser()
    parser.feed("<think>maybe " + section(kimi_call("assign_task", 0, {"task": "x"})))
    assert parser.complete_calls() == []


def test_with_early_calls_keeps_the_started_calls_first() -> None:
    a, b, c = (ToolCall(id=f"functions.t:{i}", name="t", arguments="{}") for i in range(3))
    assert with_early_calls([a], [a, b, c]) == (a, b, c)
    changed = ToolCall(id=a.id, name="t", arguments='{"x": 1}')
    assert with_early_calls([a], [changed, b]) == (a, b)  # the call that ran is the one recorded
    assert with_early_calls([b], [a, c]) == (b, a, c)  # the final parse lost it: kept anyway


async def test_sub_agents_start_while_the_orchestrator_still_streams_its_assign_turn(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=4, call_gap_s=0.4))
    outcome = await harness.run()
    assert outcome.status == "succeeded"
    assert outcome.final_answer == "FINAL\n" + "\n".join(f"result for part {i}" for i in range(4))  # in call order
    orchestrator = next(a for a in harness.store.agents(outcome.run_id) if a.role == "orchestrator")
    assign_turn = next(c for c in harness.store.model_calls(outcome.run_id, orchestrator.id) if c.step == 2)
    turn_ended = assign_turn.started_at + assign_turn.latency_s
    assigns = [c for c in harness.store.tool_calls(outcome.run_id, orchestrator.id) if c.tool == "assign_task"]
    assert len(assigns) == 4 and all(c.status == "ok" for c in assigns)
    started = sorted(c.started_at for c in assigns)
    assert started[0] < turn_ended - 0.5  # three more calls, 0.4 s apart, were still to come (slack for a loaded machine)
    assert started[-1] < turn_ended + 0.1
    subagents = [a for a in harness.store.agents(outcome.run_id) if a.role == "subagent"]
    assert {a.launched_at_step for a in subagents} == {2}  # the step under way, not the last finished one
    tool_messages = [m for m in harness.store.messages(outcome.run_id, orchestrator.id) if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages][1:] == [f"functions.assign_task:{i}" for i in range(4)]


async def test_without_streaming_the_calls_start_after_the_turn(make_harness) -> None:
    harness = make_harness(SwarmBrain(num_subagents=2))
    outcome = await harness.run(stream=False)
    assert outcome.status == "succeeded"
    orchestrator = next(a for a in harness.store.agents(outcome.run_id) if a.role == "orchestrator")
    assign_turn = next(c for c in harness.store.model_calls(outcome.run_id, orchestrator.id) if c.step == 2)
    assigns = [c for c in harness.store.tool_calls(outcome.run_id, orchestrator.id) if c.tool == "assign_task"]
    assert min(c.started_at for c in assigns) >= assign_turn.started_at + assign_turn.latency_s - 0.01


class HandsOnThenFails:
    """A model double: hands `calls` to `on_tool_call`, then fails with `error`."""

    name = "hands-on-then-fails"

    def __init__(self, calls: list[ToolCall], error: Exception) -> None:
        self.calls, self.error, self.attempts = calls, error, 0

    async def complete(self, messages, tools, context: CallContext) -> ModelResponse:
        self.attempts += 1
        if context.on_tool_call is not None:
            for call in self.calls:
                context.on_tool_call(call)
        await anyio.sleep(0.05)
        raise self.error

    async def aclose(self) -> None:
        pass


async def test_a_call_whose_tool_calls_started_is_not_retried() -> None:
    model = HandsOnThenFails([ToolCall(id="functions.t:0", name="t", arguments="{}")], ModelUnavailable("connection reset"))
    handed: list[ToolCall] = []
    context = CallContext(agent_id="a", agent_name="a", role="orchestrator", on_tool_call=handed.append)
    retrying = RetryingModel(model, policy=RetryPolicy(max_attempts=4, base_delay_s=0.0))
    with pytest.raises(ModelUnavailable, match="not tried again: 1 of its tool calls had started"):
        await retrying.complete([Message(role="user", content="hi")], [], context)
    assert model.attempts == 1 and len(handed) == 1


class SubagentsWait:
    """Sub-agents' model calls wait until cancelled (the failing orchestrator must stop them)."""

    def __init__(self, orchestrator: HandsOnThenFails) -> None:
        self.orchestrator = orchestrator
        self.name = "double"

    async def complete(self, messages, tools, context: CallContext) -> ModelResponse:
        if context.role == "orchestrator":
            return await self.orchestrator.complete(messages, tools, context)
        await anyio.sleep_forever()
        return ModelResponse(message=Message(role="assistant", content="never"), usage=Usage(), model=self.name)

    async def aclose(self) -> None:
        pass


async def test_when_the_model_call_fails_after_its_calls_started_they_are_stopped(tmp_path) -> None:
    calls = [
        ToolCall(id="functions.create_subagent:0", name="create_subagent", arguments='{"name": "w", "system_prompt": "p"}'),
        ToolCall(id="functions.assign_task:1", name="assign_task", arguments='{"agent": "w", "task": "part 0"}'),
    ]
    model = RetryingModel(SubagentsWait(HandsOnThenFails(calls, ModelRequestError("400: context too long"))))
    store = TraceStore(tmp_path / "t.db")
    request = RunRequest(prompt="do it", mode="swarm", limits=Limits(), model_label="double")
    with Recorder(store) as recorder:
        with anyio.fail_after(10):
            outcome = await Coordinator(request, model, [], recorder).run()
        recorder.flush()
    assert outcome.status == "failed" and "context too long" in (outcome.stop_reason or "")
    subagents = [a for a in store.agents(outcome.run_id) if a.role == "subagent"]
    assert len(subagents) == 1 and subagents[0].status == "failed"  # started early, stopped with the run
    assert subagents[0].stop_reason == outcome.stop_reason
    assert {c.tool: c.status for c in store.tool_calls(outcome.run_id)} == {"create_subagent": "ok", "assign_task": "cancelled"}


@pytest.mark.parametrize(
    ("calls", "num_handed"),
    [
        ([("a", {"x": 1}), ("b", {"y": 2}), ("c", {"z": 3})], 2),  # the last closes only with the stream
        ([("a", "{broken"), ("b", {"y": 2}), ("c", {"z": 3})], 0),  # nothing after a broken call
    ],
)
async def test_the_openai_stream_hands_on_each_call_when_the_next_begins(calls, num_handed) -> None:
    handed: list[ToolCall] = []
    context = CallContext(agent_id="a", agent_name="a", role="orchestrator", on_tool_call=handed.append)
    with FakeOpenAIServer(lambda body: Reply(tool_calls=calls)) as server:
        model = OpenAIChatModel(server.base_url, model_name="fake-kimi", api_key=None, stream=True)
        try:
            response = await model.complete([Message(role="user", content="go")], [], context)
        finally:
            await model.aclose()
    assert len(handed) == num_handed
    assert [c.name for c in response.message.tool_calls] == ["a", "b", "c"]
    assert list(response.message.tool_calls[:num_handed]) == handed
