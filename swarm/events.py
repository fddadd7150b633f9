"""Events of a run, and the `TraceSink` seam that receives them.

The coordinator and agents emit events; sinks (the SQLite recorder, the progress printer,
the TUI) consume them. `emit` must not block: a sink that does I/O queues the event and
does the work elsewhere. Events carry everything a sink needs, so sinks keep no
back-channel to the swarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from swarm.messages import Message, Usage

RunStatus = Literal["running", "succeeded", "failed", "cancelled", "budget_exceeded"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    at: float  # epoch seconds


class RunStarted(_Event):
    kind: Literal["run_started"] = "run_started"
    prompt: str
    mode: str
    model: str
    model_name: str
    config_json: str


class AgentStarted(_Event):
    kind: Literal["agent_started"] = "agent_started"
    agent_id: str
    parent_id: str | None
    name: str
    role: str
    task: str
    system_prompt: str
    launched_at_step: int | None


class MessageAdded(_Event):
    kind: Literal["message_added"] = "message_added"
    agent_id: str
    seq: int
    message: Message


class TextDelta(_Event):
    """Streamed content of a model call in progress (live only, not stored)."""

    kind: Literal["text_delta"] = "text_delta"
    agent_id: str
    text: str


class ModelCallFinished(_Event):
    kind: Literal["model_call_finished"] = "model_call_finished"
    agent_id: str
    step: int
    attempt: int
    model: str
    status: Literal["ok", "error"]
    error: str | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    latency_s: float = 0.0
    ttft_s: float | None = None
    started_at: float


class ToolCallStarted(_Event):
    kind: Literal["tool_call_started"] = "tool_call_started"
    record_id: str
    agent_id: str
    step: int
    call_id: str
    tool: str
    arguments: str


class ToolCallFinished(_Event):
    kind: Literal["tool_call_finished"] = "tool_call_finished"
    record_id: str
    agent_id: str
    tool: str
    status: Literal["ok", "error", "cancelled"]
    result: str | None
    error: str | None
    duration_s: float


class AgentFinished(_Event):
    kind: Literal["agent_finished"] = "agent_finished"
    agent_id: str
    status: RunStatus
    stop_reason: str | None
    final_answer: str | None
    steps: int
    num_tool_calls: int
    usage: Usage


class RunFinished(_Event):
    kind: Literal["run_finished"] = "run_finished"
    status: RunStatus
    stop_reason: str | None
    final_answer: str | None
    num_agents: int
    num_tool_calls: int
    critical_steps: int
    usage: Usage
    wall_time_s: float


Event = (
    RunStarted
    | AgentStarted
    | MessageAdded
    | TextDelta
    | ModelCallFinished
    | ToolCallStarted
    | ToolCallFinished
    | AgentFinished
    | RunFinished
)


class TraceSink(Protocol):
    """Receives every event of a run; `emit` must return quickly and never raise."""

    def emit(self, event: Event) -> None: ...


class FanOut:
    """A sink that forwards each event to several sinks."""

    def __init__(self, sinks: Sequence[TraceSink]) -> None:
        self._sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            sink.emit(event)
