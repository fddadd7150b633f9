"""Synthetic runs as event streams: deterministic data for tests, snapshots and the benchmark.

`synthetic_events` plays a swarm run without a model: an orchestrator that launches
`num_subagents` sub-agents at its step 2, each making `calls_per_agent` tool calls, with
fixed timestamps from `t0`. Feed the events to a `RunModel` (live) or a `Recorder`
(database). `is_finished=False` stops before anything ends, as a run caught mid-way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from swarm.events import (
    AgentFinished,
    AgentStarted,
    Event,
    MessageAdded,
    ModelCallFinished,
    RunFinished,
    RunStarted,
    ToolCallFinished,
    ToolCallStarted,
)
from swarm.messages import Message, ToolCall, Usage


def synthetic_events(
    run_id: str,
    *,
    prompt: str = "Survey the field",
    num_subagents: int = 3,
    calls_per_agent: int = 2,
    t0: float = 1_700_000_000.0,
    is_finished: bool = True,
) -> Iterator[Event]:
    t = t0

    def tick() -> float:
        nonlocal t
        t += 0.01
        return t

    yield RunStarted(run_id=run_id, at=t0, prompt=prompt, mode="swarm", model="openai:http://127.0.0.1:8000/v1",
                     model_name="kimi-k2.5", config_json="{}")
    root = f"{run_id}.0"
    yield AgentStarted(run_id=run_id, at=tick(), agent_id=root, parent_id=None, name="orchestrator",
                       role="orchestrator", task=prompt, system_prompt="You coordinate.", launched_at_step=None)
    yield from _messages(run_id, root, t0, ["You coordinate.", prompt], ["system", "user"])
    usage = Usage(input_tokens=100, output_tokens=20)
    for step in (1, 2):
        yield ModelCallFinished(run_id=run_id, at=tick(), agent_id=root, step=step, attempt=1, model="kimi-k2.5",
                                status="ok", usage=usage, latency_s=0.5, started_at=t)
    assign = [ToolCall(id=f"functions.assign_task:{i}", name="assign_task",
                       arguments=json.dumps({"agent": "researcher", "task": f"part {i}"})) for i in range(num_subagents)]
    yield MessageAdded(run_id=run_id, at=tick(), agent_id=root, seq=2,
                       message=Message(role="assistant", content="I will split the work.", tool_calls=tuple(assign)))
    for i in range(num_subagents):
        agent_id = f"{run_id}.{i + 1}"
        yield ToolCallStarted(run_id=run_id, at=tick(), record_id=f"{root}.2.{i}", agent_id=root, step=2,
                              call_id=assign[i].id, tool="assign_task", arguments=assign[i].arguments)
        yield AgentStarted(run_id=run_id, at=tick(), agent_id=agent_id, parent_id=root, name="researcher",
                           role="subagent", task=f"part {i}", system_prompt="You research.", launched_at_step=2)
        yield from _messages(run_id, agent_id, t, ["You research.", f"part {i}"], ["system", "user"])
        for k in range(calls_per_agent):
            yield ModelCallFinished(run_id=run_id, at=tick(), agent_id=agent_id, step=k + 1, attempt=1,
                                    model="kimi-k2.5", status="ok", usage=usage, latency_s=0.25, started_at=t)
            arguments = json.dumps({"text": f"part {i} query {k}"})
            yield MessageAdded(run_id=run_id, at=tick(), agent_id=agent_id, seq=2 + 2 * k, message=Message(
                role="assistant", content=None, tool_calls=(ToolCall(id="functions.echo:0", name="echo", arguments=arguments),)))
            record = f"{agent_id}.{k + 1}.0"
            yield ToolCallStarted(run_id=run_id, at=tick(), record_id=record, agent_id=agent_id, step=k + 1,
                                  call_id="functions.echo:0", tool="echo", arguments=arguments)
            if is_finished or k < calls_per_agent - 1:
                yield ToolCallFinished(run_id=run_id, at=tick(), record_id=record, agent_id=agent_id, tool="echo",
                                       status="ok", result=f"echo: part {i} query {k}", error=None, duration_s=0.125)
                yield MessageAdded(run_id=run_id, at=tick(), agent_id=agent_id, seq=3 + 2 * k, message=Message(
                    role="tool", content=f"echo: part {i} query {k}", tool_call_id="functions.echo:0", name="echo"))
    if not is_finished:
        return
    for i in range(num_subagents):
        agent_id = f"{run_id}.{i + 1}"
        answer = f"**Findings** for part {i}:\n\n- point one\n- point two"
        yield ModelCallFinished(run_id=run_id, at=tick(), agent_id=agent_id, step=calls_per_agent + 1, attempt=1,
                                model="kimi-k2.5", status="ok", usage=usage, latency_s=0.25, started_at=t)
        yield MessageAdded(run_id=run_id, at=tick(), agent_id=agent_id, seq=2 + 2 * calls_per_agent,
                           message=Message(role="assistant", content=answer))
        yield AgentFinished(run_id=run_id, at=tick(), agent_id=agent_id, status="succeeded", stop_reason=None,
                            final_answer=answer, steps=calls_per_agent + 1, num_tool_calls=calls_per_agent,
                            usage=Usage(input_tokens=100 * (calls_per_agent + 1), output_tokens=20 * (calls_per_agent + 1)))
        yield ToolCallFinished(run_id=run_id, at=tick(), record_id=f"{root}.2.{i}", agent_id=root, tool="assign_task",
                               status="ok", result=answer, error=None, duration_s=1.5)
    yield ModelCallFinished(run_id=run_id, at=tick(), agent_id=root, step=3, attempt=1, model="kimi-k2.5",
                            status="ok", usage=usage, latency_s=0.5, started_at=t)
    final = "# Report\n\nAll parts are done."
    yield MessageAdded(run_id=run_id, at=tick(), agent_id=root, seq=3 + num_subagents,
                       message=Message(role="assistant", content=final))
    yield AgentFinished(run_id=run_id, at=tick(), agent_id=root, status="succeeded", stop_reason=None,
                        final_answer=final, steps=3, num_tool_calls=num_subagents, usage=Usage(input_tokens=300, output_tokens=60))
    total = Usage(input_tokens=300 + 100 * num_subagents * (calls_per_agent + 1),
                  output_tokens=60 + 20 * num_subagents * (calls_per_agent + 1))
    yield RunFinished(run_id=run_id, at=t0 + 42.0, status="succeeded", stop_reason=None, final_answer=final,
                      num_agents=num_subagents + 1, num_tool_calls=num_subagents * (calls_per_agent + 1),
                      critical_steps=3 + calls_per_agent + 1, usage=total, wall_time_s=42.0)


def _messages(run_id: str, agent_id: str, at: float, contents: list[str], roles: list[str]) -> Iterator[Event]:
    for seq, (role, content) in enumerate(zip(roles, contents, strict=True)):
        yield MessageAdded(run_id=run_id, at=at, agent_id=agent_id, seq=seq, message=Message(role=role, content=content))  # type: ignore[arg-type]
