"""The coordinator: runs a task as an orchestrator with parallel sub-agents (or one agent).

The orchestrator has the Kimi K2.5 Agent Swarm tools besides the run's own tools:

    create_subagent(name, system_prompt)   defines a reusable kind of sub-agent
    assign_task(agent, task)               runs a fresh instance on a task; the result is
                                           its final answer only, never its trajectory

All `assign_task` calls of one assistant turn run concurrently (the agent loop starts
every `is_concurrent` tool in one task group, each as soon as the model's stream has it
whole, so sub-agents start while the orchestrator still writes); a capacity limiter
shared by the whole run caps how many sub-agents run at once. A sub-agent that fails,
runs out of steps or is cancelled does not disturb its siblings: that outcome is the
result of its call.

Run statuses: succeeded | failed | cancelled | budget_exceeded, with a stop reason that
names the limit or error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from swarm import prompts
from swarm.agent import Agent, FinalAnswer, OutOfSteps, StepResult
from swarm.backends.retry import RetryingModel
from swarm.errors import ModelError, TaskFileError
from swarm.events import RunFinished, RunStarted, RunStatus, TraceSink
from swarm.limits import Limits, RunBudget
from swarm.messages import Usage
from swarm.run_state import AgentState, RunState
from swarm.tooling import Tool, ToolKit
from tools.base import ToolError


@dataclass(frozen=True)
class RunRequest:
    """What to run; built from a task file and flags by the CLI (or by the TUI)."""

    prompt: str
    mode: Literal["swarm", "single"] = "swarm"
    limits: Limits = Limits()
    system_prompt: str | None = None
    model_label: str = ""  # the model spec as recorded (no credentials)
    config_json: str = "{}"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: RunStatus
    stop_reason: str | None
    final_answer: str | None
    num_tool_calls: int
    critical_steps: int
    usage: Usage
    wall_time_s: float


async def open_agent_tools(kits: Sequence[ToolKit], agent_id: str, stack: AsyncExitStack) -> list[Tool]:
    tools: list[Tool] = []
    for kit in kits:
        tools.extend(await stack.enter_async_context(kit.for_agent(agent_id)))
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TaskFileError(f"[tools].enabled: two kits both provide a tool named {duplicates[0]!r}")
    return tools


@dataclass
class _Definition:
    name: str
    system_prompt: str


class _CreateSubagent:
    name = "create_subagent"
    description = "Define a reusable sub-agent: a name and the system prompt its instances start with."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Short unique name, e.g. 'researcher'."},
            "system_prompt": {"type": "string", "description": "Instructions every instance starts with."},
        },
        "required": ["name", "system_prompt"],
    }
    is_concurrent = False

    def __init__(self, swarm: _SwarmTools) -> None:
        self._swarm = swarm

    async def __call__(self, arguments: dict[str, Any]) -> str:
        name, system_prompt = arguments.get("name"), arguments.get("system_prompt")
        if not isinstance(name, str) or not name.strip():
            raise ToolError("create_subagent needs a non-empty string 'name'")
        if not isinstance(system_prompt, str):
            raise ToolError("create_subagent needs a string 'system_prompt'")
        name = name.strip()
        existed = name in self._swarm.definitions
        self._swarm.definitions[name] = _Definition(name, system_prompt)
        return f"Sub-agent {name!r} {'updated' if existed else 'created'}. Use assign_task(agent={name!r}, task=...) to run it."


class _AssignTask:
    name = "assign_task"
    description = (
        "Run a fresh instance of a sub-agent on a self-contained task and return its final answer. "
        "Several assign_task calls in one turn run in parallel."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "agent": {"type": "string", "description": "Name given to create_subagent."},
            "task": {"type": "string", "description": "The complete task for this instance."},
        },
        "required": ["agent", "task"],
    }
    is_concurrent = True

    def __init__(self, swarm: _SwarmTools) -> None:
        self._swarm = swarm

    async def __call__(self, arguments: dict[str, Any]) -> str:
        agent, task = arguments.get("agent"), arguments.get("task")
        if not isinstance(agent, str) or not isinstance(task, str) or not task.strip():
            raise ToolError("assign_task needs strings 'agent' and a non-empty 'task'")
        definition = self._swarm.definitions.get(agent.strip())
        if definition is None:
            known = ", ".join(sorted(self._swarm.definitions)) or "none yet; call create_subagent first"
            raise ToolError(f"no sub-agent named {agent!r} (defined: {known})")
        return await self._swarm.run_subagent(definition, task)


class _SwarmTools:
    """The orchestrator's two tools and the sub-agents they launch."""

    def __init__(self, run: RunState, root: AgentState, kits: Sequence[ToolKit]) -> None:
        self.run, self.root, self.kits = run, root, kits
        self.definitions: dict[str, _Definition] = {}

    def tools(self) -> list[Tool]:
        return [_CreateSubagent(self), _AssignTask(self)]

    async def run_subagent(self, definition: _Definition, task: str) -> str:
        run, limits = self.run, self.run.budget.limits
        if not run.budget.try_take_subagent():
            raise ToolError(
                f"max_subagents ({limits.max_subagents}) reached: no more sub-agents can run in this task; "
                "finish with the results you have"
            )
        launched_at = self.root.current_step  # a call can start while its step's model call streams
        async with run.subagent_limiter:
            child = run.new_agent(
                name=definition.name, role="subagent", parent=self.root, task=task,
                system_prompt=definition.system_prompt, launched_at_step=launched_at,
            )
            child.cancel_scope = scope = anyio.CancelScope()
            result: StepResult | None = None
            error: Exception | None = None
            try:
                with scope:
                    # Tools are opened and closed inside the same scope, unshielded: a kit
                    # may hold a task group, which must exit in the scope it was entered in
                    # (kits shield their own clean-up, see swarm.tooling.ToolKit).
                    stack = AsyncExitStack()
                    try:
                        tools = await open_agent_tools(self.kits, child.id, stack)
                        agent = Agent(
                            run, child, system_prompt=definition.system_prompt, task=task,
                            tools=tools, max_steps=limits.subagent_max_steps,
                        )
                        result = await agent.run_to_end()
                    finally:
                        await stack.aclose()
            except Exception as exc:  # isolation: a failing sub-agent is its call's result
                error = exc
        label = f"sub-agent {definition.name!r} ({child.id})"
        if scope.cancelled_caught:
            reason = child.cancel_reason or "cancelled"
            run.finish_agent(child, "cancelled", reason, None)
            raise ToolError(f"{label} was cancelled: {reason}")
        if error is not None:
            reason = str(error) if isinstance(error, ModelError) else f"{type(error).__name__}: {error}"
            run.finish_agent(child, "failed", reason, None)
            raise ToolError(f"{label} failed: {reason}")
        if isinstance(result, OutOfSteps):
            reason = f"subagent_max_steps ({limits.subagent_max_steps}) reached without a final answer"
            run.finish_agent(child, "budget_exceeded", reason, None)
            raise ToolError(f"{label} stopped: {reason}")
        assert isinstance(result, FinalAnswer)
        run.finish_agent(child, "succeeded", None, result.text)
        return result.text or "(the sub-agent gave an empty answer)"


class Coordinator:
    """Runs one request to the end; `cancel` and `cancel_agent` may be called meanwhile."""

    def __init__(
        self,
        request: RunRequest,
        model: RetryingModel,
        kits: Sequence[ToolKit],
        sink: TraceSink,
        *,
        run_id: str | None = None,
        stream_text: bool = False,
    ) -> None:
        self.request = request
        self.state = RunState(
            run_id=run_id or uuid.uuid4().hex[:16], model=model, sink=sink,
            budget=RunBudget(request.limits), kits=list(kits), stream_text=stream_text,
        )

    @property
    def run_id(self) -> str:
        return self.state.run_id

    def cancel(self, reason: str = "cancelled by user") -> None:
        self.state.stop("cancelled", reason)

    def cancel_agent(self, agent_id: str, reason: str = "cancelled by user") -> bool:
        return self.state.cancel_agent(agent_id, reason)

    async def run(self) -> RunOutcome:
        request, run = self.request, self.state
        started_at, started = time.time(), time.perf_counter()
        run.emit(
            RunStarted(
                run_id=run.run_id, at=started_at, prompt=request.prompt, mode=request.mode,
                model=request.model_label, model_name=run.model.name, config_json=request.config_json,
            )
        )
        is_swarm = request.mode == "swarm"
        system_prompt = request.system_prompt or (prompts.ORCHESTRATOR if is_swarm else prompts.SINGLE_AGENT)
        root = run.new_agent(
            name="orchestrator" if is_swarm else "agent", role="orchestrator", parent=None,
            task=request.prompt, system_prompt=system_prompt,
        )
        result: StepResult | None = None
        failure: str | None = None
        with run.scope, anyio.move_on_after(request.limits.timeout_s) as timeout:
            stack = AsyncExitStack()  # closed in this scope, where its kits were entered
            try:
                for kit in run.kits:
                    await stack.enter_async_context(kit)
                tools = await open_agent_tools(run.kits, root.id, stack)
                if is_swarm:
                    tools += _SwarmTools(run, root, run.kits).tools()
                agent = Agent(
                    run, root, system_prompt=system_prompt, task=request.prompt,
                    tools=tools, max_steps=request.limits.orchestrator_max_steps,
                )
                result = await agent.run_to_end()
            except (ModelError, ToolError, TaskFileError) as exc:
                failure = str(exc)
            except Exception as exc:  # a bug: the run is recorded as failed, not lost
                failure = f"internal error: {type(exc).__name__}: {exc}"
            finally:
                await stack.aclose()
        status, reason = self._conclude(result, failure, timeout.cancelled_caught)
        answer = result.text if isinstance(result, FinalAnswer) else None
        for agent_state in run.agents.values():
            if agent_state.status == "running":
                is_root = agent_state is root
                run.finish_agent(
                    agent_state, status, reason, answer if is_root else None
                )
        outcome = RunOutcome(
            run_id=run.run_id, status=status, stop_reason=reason, final_answer=answer,
            num_tool_calls=run.budget.num_tool_calls, critical_steps=run.critical_steps(root),
            usage=Usage(input_tokens=run.budget.input_tokens, output_tokens=run.budget.output_tokens),
            wall_time_s=time.perf_counter() - started,
        )
        run.emit(
            RunFinished(
                run_id=run.run_id, at=time.time(), status=status, stop_reason=reason,
                final_answer=answer, num_agents=len(run.agents), num_tool_calls=outcome.num_tool_calls,
                critical_steps=outcome.critical_steps, usage=outcome.usage, wall_time_s=outcome.wall_time_s,
            )
        )
        return outcome

    def _conclude(self, result: StepResult | None, failure: str | None, timed_out: bool) -> tuple[RunStatus, str | None]:
        run, limits = self.state, self.request.limits
        if run.stop_status is not None:
            return run.stop_status, run.stop_reason
        if timed_out:
            return "budget_exceeded", f"timeout_s ({limits.timeout_s:g}) elapsed"
        if failure is not None:
            return "failed", failure
        if isinstance(result, OutOfSteps):
            return "budget_exceeded", f"orchestrator_max_steps ({limits.orchestrator_max_steps}) reached without a final answer"
        return "succeeded", None
