"""`RunModel`: what the run view knows about one run, fed by live events or database rows.

Pure Python, no Textual: a live sink calls `apply(event)` for each event and a database
poller calls `apply_rows(...)`; both only update dictionaries and mark what changed. The
screen takes the changes once per frame (`take_changes`) and updates just those widgets,
so 15,000 events cost 15,000 dictionary updates, not 15,000 re-renders.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

from storage.models import AgentRow, MessageRow, ModelCallRow, RunRow, ToolCallRow
from swarm.events import (
    AgentFinished,
    AgentStarted,
    Event,
    MessageAdded,
    ModelCallFinished,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

_RATE_WINDOW_S = 5.0


@dataclass
class AgentView:
    id: str
    name: str
    role: str
    parent_id: str | None
    started_at: float
    task: str = ""
    launched_at_step: int | None = None
    status: str = "running"
    stop_reason: str | None = None
    final_answer: str | None = None
    steps: int = 0
    num_tool_calls: int = 0
    output_tokens: int = 0
    depth: int = 0

    @property
    def is_running(self) -> bool:
        return self.status == "running"


@dataclass
class ToolCallView:
    id: str
    agent_id: str
    step: int
    tool: str
    arguments: str
    started_at: float
    status: str = "running"
    result: str | None = None
    error: str | None = None
    duration_s: float | None = None


@dataclass
class MessageView:
    seq: int
    role: str
    content: str | None
    reasoning: str | None = None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments)
    name: str | None = None


@dataclass
class Changes:
    """What changed since the last `take_changes`: the screen updates only these."""

    is_structure: bool = False  # agents were added: the tree's rows moved
    agents: set[str] = field(default_factory=set)
    tool_calls: set[str] = field(default_factory=set)
    messages: set[str] = field(default_factory=set)  # agent ids with new messages
    streamed: set[str] = field(default_factory=set)  # agent ids whose streamed text grew
    is_run: bool = False

    def __bool__(self) -> bool:
        return self.is_structure or self.is_run or bool(self.agents or self.tool_calls or self.messages or self.streamed)


@dataclass(frozen=True)
class Figures:
    status: str
    num_agents: int
    num_active: int
    num_tool_calls: int
    tokens_per_s: float
    critical_steps: int
    elapsed_s: float
    input_tokens: int
    output_tokens: int


class RunModel:
    """One run's agents, tool calls, messages and streamed text."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.prompt = ""
        self.mode = "swarm"
        self.model = ""
        self.status = "running"
        self.stop_reason: str | None = None
        self.final_answer: str | None = None
        self.started_at: float | None = None
        self.wall_time_s: float | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.agents: dict[str, AgentView] = {}
        self.order: list[str] = []  # the tree, depth first
        self.tool_calls: dict[str, ToolCallView] = {}
        self.calls_by_agent: dict[str, list[str]] = {}
        self.messages: dict[str, list[MessageView]] = {}
        self.streaming: dict[str, str] = {}
        self._recent_output: deque[tuple[float, int]] = deque()
        self._changes = Changes()

    # -- changes ------------------------------------------------------------------

    def take_changes(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        if changes.is_structure:
            self._rebuild_order()
        return changes

    def _rebuild_order(self) -> None:
        children: dict[str | None, list[str]] = {}
        for agent in self.agents.values():
            parent = agent.parent_id if agent.parent_id in self.agents else None
            children.setdefault(parent, []).append(agent.id)
        order: list[str] = []
        stack = [(agent_id, 0) for agent_id in reversed(children.get(None, []))]
        while stack:
            agent_id, depth = stack.pop()
            self.agents[agent_id].depth = depth
            order.append(agent_id)
            stack.extend((child, depth + 1) for child in reversed(children.get(agent_id, [])))
        self.order = order

    # -- live events --------------------------------------------------------------

    def apply(self, event: Event) -> None:
        c = self._changes
        if isinstance(event, TextDelta):
            self.streaming[event.agent_id] = self.streaming.get(event.agent_id, "") + event.text
            c.streamed.add(event.agent_id)
        elif isinstance(event, ToolCallStarted):
            self._add_call(ToolCallView(event.record_id, event.agent_id, event.step, event.tool, event.arguments, event.at))
        elif isinstance(event, ToolCallFinished):
            call = self.tool_calls.get(event.record_id)
            if call is not None:
                call.status, call.result, call.error, call.duration_s = event.status, event.result, event.error, event.duration_s
                c.tool_calls.add(call.id)
        elif isinstance(event, MessageAdded):
            m = event.message
            self._add_message(
                event.agent_id,
                MessageView(event.seq, m.role, m.content, m.reasoning,
                            [(t.name, t.arguments) for t in m.tool_calls], m.name),
            )
        elif isinstance(event, ModelCallFinished):
            if event.status == "ok":
                self._count_step(event.agent_id, event.usage.input_tokens, event.usage.output_tokens, event.at)
        elif isinstance(event, AgentStarted):
            self._add_agent(AgentView(event.agent_id, event.name, event.role, event.parent_id, event.at,
                                      event.task, event.launched_at_step))
        elif isinstance(event, AgentFinished):
            agent = self.agents.get(event.agent_id)
            if agent is not None:
                agent.status, agent.stop_reason, agent.final_answer = event.status, event.stop_reason, event.final_answer
                agent.steps, agent.num_tool_calls = event.steps, event.num_tool_calls
                c.agents.add(agent.id)
        elif isinstance(event, RunStarted):
            self.prompt, self.mode, self.model, self.started_at = event.prompt, event.mode, event.model, event.at
            c.is_run = True
        elif isinstance(event, RunFinished):
            self.status, self.stop_reason, self.final_answer = event.status, event.stop_reason, event.final_answer
            self.wall_time_s = event.wall_time_s
            self.input_tokens, self.output_tokens = event.usage.input_tokens, event.usage.output_tokens
            c.is_run = True

    def fail(self, reason: str) -> None:
        """The run could not go on (its front end saw an error no event reports)."""
        if self.status == "running":
            self.status, self.stop_reason = "failed", reason
            self._changes.is_run = True

    def _add_agent(self, agent: AgentView) -> None:
        if agent.id not in self.agents:
            self.agents[agent.id] = agent
            self._changes.is_structure = True

    def _add_call(self, call: ToolCallView) -> None:
        if call.id not in self.tool_calls:
            self.calls_by_agent.setdefault(call.agent_id, []).append(call.id)
            agent = self.agents.get(call.agent_id)
            if agent is not None and agent.is_running:
                agent.num_tool_calls = len(self.calls_by_agent[call.agent_id])
                self._changes.agents.add(agent.id)
        self.tool_calls[call.id] = call
        self._changes.tool_calls.add(call.id)

    def _add_message(self, agent_id: str, message: MessageView) -> None:
        self.messages.setdefault(agent_id, []).append(message)
        if message.role == "assistant":
            self.streaming.pop(agent_id, None)
        self._changes.messages.add(agent_id)

    def _count_step(self, agent_id: str, input_tokens: int, output_tokens: int, at: float, *, is_agent: bool = True) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None and is_agent:
            agent.steps += 1
            agent.output_tokens += output_tokens
            self._changes.agents.add(agent_id)
        if self.status == "running":
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self._recent_output.append((at, output_tokens))
        self._changes.is_run = True

    # -- database rows ------------------------------------------------------------

    def apply_run_row(self, row: RunRow) -> None:
        self.prompt, self.mode, self.model, self.started_at = row.prompt, row.mode, row.model, row.started_at
        if row.status != "running":
            self.status, self.stop_reason, self.final_answer = row.status, row.stop_reason, row.final_answer
            self.wall_time_s = row.wall_time_s
            self.input_tokens, self.output_tokens = row.input_tokens, row.output_tokens
        self._changes.is_run = True

    def apply_agent_row(self, row: AgentRow) -> None:
        agent = self.agents.get(row.id)
        if agent is None:
            agent = AgentView(row.id, row.name, row.role, row.parent_id, row.started_at, row.task, row.launched_at_step)
            self._add_agent(agent)
        agent.status, agent.stop_reason, agent.final_answer = row.status, row.stop_reason, row.final_answer
        if row.status != "running":
            agent.steps, agent.num_tool_calls = row.steps, row.num_tool_calls
        self._changes.agents.add(agent.id)

    def apply_tool_call_row(self, row: ToolCallRow) -> None:
        self._add_call(
            ToolCallView(row.id, row.agent_id, row.step, row.tool, row.arguments, row.started_at,
                         row.status, row.result, row.error, row.duration_s)
        )

    def apply_message_row(self, row: MessageRow) -> None:
        calls = [(c["name"], c["arguments"]) for c in json.loads(row.tool_calls_json)] if row.tool_calls_json else []
        self._add_message(row.agent_id, MessageView(row.seq, row.role, row.content, row.reasoning, calls, row.name))

    def apply_model_call_row(self, row: ModelCallRow) -> None:
        if row.status == "ok":
            agent = self.agents.get(row.agent_id)
            # a finished agent's row already carries its final step count
            is_agent = agent is not None and agent.is_running
            self._count_step(row.agent_id, row.input_tokens, row.output_tokens, row.started_at + row.latency_s, is_agent=is_agent)

    # -- figures ------------------------------------------------------------------

    def critical_steps(self) -> int:
        """Sum over the orchestrator's steps t of (1 + most steps of a sub-agent launched at t)."""
        root = next((a for a in self.agents.values() if a.parent_id is None), None)
        if root is None:
            return 0
        longest: dict[int, int] = {}
        for agent in self.agents.values():
            if agent.parent_id == root.id and agent.launched_at_step is not None:
                longest[agent.launched_at_step] = max(longest.get(agent.launched_at_step, 0), agent.steps)
        return sum(1 + longest.get(step, 0) for step in range(1, root.steps + 1))

    def figures(self, now: float | None = None) -> Figures:
        """The header's figures; finished runs use stored values only (no clock)."""
        is_running = self.status == "running"
        if is_running:
            now = time.time() if now is None else now
            elapsed = max(0.0, now - (self.started_at or now))
            while self._recent_output and self._recent_output[0][0] < now - _RATE_WINDOW_S:
                self._recent_output.popleft()
            window = min(_RATE_WINDOW_S, elapsed) or 1.0
            rate = sum(n for _, n in self._recent_output) / window
        else:
            elapsed = self.wall_time_s or 0.0
            rate = self.output_tokens / elapsed if elapsed else 0.0
        return Figures(
            status=self.status,
            num_agents=len(self.agents),
            num_active=sum(1 for a in self.agents.values() if a.is_running) if is_running else 0,
            num_tool_calls=len(self.tool_calls),
            tokens_per_s=rate,
            critical_steps=self.critical_steps(),
            elapsed_s=elapsed,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )
