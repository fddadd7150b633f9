"""The state one run shares between its agents: ids, counters, stop reasons, cancel scopes.

Everything here lives on one event loop, so plain attributes need no locks. Stopping a
run (a budget tripped, the user cancelled, the timeout passed) records why first, then
cancels the run's scope: every agent unwinds through ordinary cancellation and reports
the run's stop status as its own.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import anyio

from swarm.backends.retry import RetryingModel
from swarm.events import AgentFinished, AgentStarted, Event, RunStatus, TraceSink
from swarm.limits import RunBudget
from swarm.messages import Usage
from swarm.model import AgentRole
from swarm.tooling import ToolKit

StopStatus = Literal["cancelled", "budget_exceeded", "failed"]


@dataclass
class AgentState:
    """One agent instance of a run and its running totals."""

    id: str
    name: str
    role: AgentRole
    parent_id: str | None
    launched_at_step: int | None = None
    steps: int = 0  # steps whose model call has answered
    current_step: int = 0  # the step under way (its model call, then its tools)
    num_tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    status: RunStatus = "running"
    stop_reason: str | None = None
    final_answer: str | None = None
    cancel_scope: anyio.CancelScope | None = None
    cancel_reason: str | None = None  # set when this agent alone was cancelled


class RunState:
    """Shared by every agent of one run."""

    def __init__(
        self,
        *,
        run_id: str,
        model: RetryingModel,
        sink: TraceSink,
        budget: RunBudget,
        kits: list[ToolKit],
        stream_text: bool = False,
    ) -> None:
        self.run_id = run_id
        self.model = model
        self.sink = sink
        self.budget = budget
        self.kits = kits
        self.stream_text = stream_text
        self.subagent_limiter = anyio.CapacityLimiter(budget.limits.max_concurrency)
        self.agents: dict[str, AgentState] = {}
        self.scope = anyio.CancelScope()
        self.stop_status: StopStatus | None = None
        self.stop_reason: str | None = None
        # Orchestrator step -> the step counts of the sub-agents launched at that step.
        self.launched: defaultdict[int, list[AgentState]] = defaultdict(list)
        self._next_agent = 0

    def emit(self, event: Event) -> None:
        self.sink.emit(event)

    # -- agents -------------------------------------------------------------

    def new_agent(
        self,
        *,
        name: str,
        role: AgentRole,
        parent: AgentState | None,
        task: str,
        system_prompt: str,
        launched_at_step: int | None = None,
    ) -> AgentState:
        agent = AgentState(
            id=f"{self.run_id}.{self._next_agent}",
            name=name,
            role=role,
            parent_id=parent.id if parent else None,
            launched_at_step=launched_at_step,
        )
        self._next_agent += 1
        self.agents[agent.id] = agent
        if launched_at_step is not None:
            self.launched[launched_at_step].append(agent)
        self.emit(
            AgentStarted(
                run_id=self.run_id, at=time.time(), agent_id=agent.id, parent_id=agent.parent_id,
                name=name, role=role, task=task, system_prompt=system_prompt,
                launched_at_step=launched_at_step,
            )
        )
        return agent

    def finish_agent(self, agent: AgentState, status: RunStatus, stop_reason: str | None, answer: str | None) -> None:
        agent.status, agent.stop_reason, agent.final_answer = status, stop_reason, answer
        self.emit(
            AgentFinished(
                run_id=self.run_id, at=time.time(), agent_id=agent.id, status=status,
                stop_reason=stop_reason, final_answer=answer, steps=agent.steps,
                num_tool_calls=agent.num_tool_calls, usage=agent.usage,
            )
        )

    def cancel_agent(self, agent_id: str, reason: str = "cancelled by user") -> bool:
        """Cancels one running sub-agent; its parent sees the cancellation as the result."""
        agent = self.agents.get(agent_id)
        if agent is None or agent.status != "running" or agent.cancel_scope is None:
            return False
        agent.cancel_reason = reason
        agent.cancel_scope.cancel()
        return True

    # -- stopping the run -------------------------------------------------------

    def stop(self, status: StopStatus, reason: str) -> None:
        """Stops the whole run; the first reason given wins."""
        if self.stop_status is None:
            self.stop_status, self.stop_reason = status, reason
        self.scope.cancel()

    def critical_steps(self, root: AgentState) -> int:
        """Sum over the root's steps t of (1 + the most steps among sub-agents launched at t)."""
        return sum(
            1 + max((child.steps for child in self.launched.get(step, ())), default=0)
            for step in range(1, root.steps + 1)
        )
