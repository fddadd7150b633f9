"""The agent loop: call the model, run the tools it asks for, repeat until it answers.

Each step is one model call and ends in one of a closed set of outcomes:

    FinalAnswer   the model answered without tool calls: the agent is done
    ToolsRan      the tool calls ran and their results joined the conversation
    OutOfSteps    the step limit came before a final answer

An agent with `is_concurrent` tools (an orchestrator's `assign_task`) starts each tool call
as soon as the model's stream has it whole (`CallContext.on_tool_call`), so its sub-agents
work while it is still writing the rest of the turn; the others run their calls in turn
once the model has answered.

A tool call that the model can fix (unknown tool, arguments that are not a JSON object, a
`ToolError` from the tool) comes back to the model as an error observation. Budget
trips stop the whole run (`RunState.stop`); model errors after retries and bugs propagate
to whoever runs the agent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
import anyio.lowlevel

from swarm.errors import ModelError
from swarm.events import MessageAdded, ModelCallFinished, TextDelta, ToolCallFinished, ToolCallStarted
from swarm.limits import BudgetExceeded
from swarm.messages import Message, ToolCall, ToolSpec, Usage
from swarm.model import CallContext, ModelResponse
from swarm.run_state import AgentState, RunState
from swarm.tooling import Tool
from tools.base import ToolError


@dataclass(frozen=True)
class FinalAnswer:
    text: str


@dataclass(frozen=True)
class ToolsRan:
    pass


@dataclass(frozen=True)
class OutOfSteps:
    pass


StepResult = FinalAnswer | ToolsRan | OutOfSteps


def spec_of(tool: Tool) -> ToolSpec:
    return ToolSpec(name=tool.name, description=tool.description, parameters=tool.parameters)


class Agent:
    """Runs one agent's conversation to a final answer."""

    def __init__(
        self,
        run: RunState,
        state: AgentState,
        *,
        system_prompt: str,
        task: str,
        tools: Sequence[Tool],
        max_steps: int,
    ) -> None:
        self.run = run
        self.state = state
        self.max_steps = max_steps
        self.tools = {tool.name: tool for tool in tools}
        self.specs = [spec_of(tool) for tool in tools]
        self._has_concurrent_tools = any(getattr(tool, "is_concurrent", False) for tool in tools)
        self.messages: list[Message] = []
        on_text = self._on_text if run.stream_text else None
        self.context = CallContext(agent_id=state.id, agent_name=state.name, role=state.role, on_text=on_text)
        self._add(Message(role="system", content=system_prompt))
        self._add(Message(role="user", content=task))

    async def run_to_end(self) -> StepResult:
        """Steps until a final answer or the step limit; returns the last step's result."""
        while True:
            result = await self.step()
            if not isinstance(result, ToolsRan):
                return result

    async def step(self) -> StepResult:
        if self.state.steps >= self.max_steps:
            return OutOfSteps()
        step = self.state.current_step = self.state.steps + 1
        if not self._has_concurrent_tools:
            response = await self._call_model(step, None)
            if (answer := await self._take(step, response)) is not None:
                return answer
            for index, call in enumerate(response.message.tool_calls):
                self._add_result(call, await self._run_tool_call(step, index, call))
            return ToolsRan()
        return await self._overlapped_step(step)

    async def _overlapped_step(self, step: int) -> StepResult:
        """A step whose tool calls start as the model streams them: each goes to a dispatcher
        the moment it is whole, which starts the `is_concurrent` ones in this step's task group
        and runs the others in turn, as if the calls had all come at once."""
        results: dict[int, str] = {}
        send, receive = anyio.create_memory_object_stream[tuple[int, ToolCall]](math.inf)
        num_sent = 0

        def dispatch(call: ToolCall) -> None:
            nonlocal num_sent
            send.send_nowait((num_sent, call))
            num_sent += 1

        async def run_one(index: int, call: ToolCall) -> None:
            results[index] = await self._run_tool_call(step, index, call)

        async def dispatcher() -> None:
            async with receive:
                async for index, call in receive:
                    if getattr(self.tools.get(call.name), "is_concurrent", False):
                        group.start_soon(run_one, index, call)
                    else:
                        await run_one(index, call)

        answer: FinalAnswer | None = None
        error: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher)
            with send:
                try:
                    response = await self._call_model(step, dispatch)
                    answer = await self._take(step, response)
                    for call in response.message.tool_calls[num_sent:]:
                        dispatch(call)
                except Exception as exc:  # raised as itself below, not in the group's ExceptionGroup
                    error = exc
                    group.cancel_scope.cancel()
        if error is not None:
            raise error
        if answer is not None:
            return answer
        for index, call in enumerate(response.message.tool_calls):
            self._add_result(call, results[index])
        return ToolsRan()

    async def _take(self, step: int, response: ModelResponse) -> FinalAnswer | None:
        """Adds a step's answer to the conversation; a `FinalAnswer` when it calls no tools."""
        self.state.steps = step
        self._add(response.message)
        try:
            self.run.budget.add_tokens(response.usage.input_tokens, response.usage.output_tokens)
        except BudgetExceeded as exc:
            await self._stop_run(str(exc))
        return None if response.message.tool_calls else FinalAnswer(response.message.content or "")

    # -- the model ----------------------------------------------------------------

    async def _call_model(self, step: int, on_tool_call: Callable[[ToolCall], None] | None) -> ModelResponse:
        run, state = self.run, self.state

        def observe(attempt: int, started_at: float, response: ModelResponse | None, error: ModelError | None) -> None:
            if response is not None:
                state.usage = state.usage + response.usage
            run.emit(
                ModelCallFinished(
                    run_id=run.run_id, at=time.time(), agent_id=state.id, step=step, attempt=attempt,
                    model=response.model if response else run.model.name,
                    status="ok" if response else "error", error=str(error) if error else None,
                    finish_reason=response.finish_reason if response else None,
                    usage=response.usage if response else Usage(),
                    latency_s=response.latency_s if response else time.time() - started_at,
                    ttft_s=response.ttft_s if response else None, started_at=started_at,
                )
            )

        context = self.context if on_tool_call is None else replace(self.context, on_tool_call=on_tool_call)
        return await run.model.complete(self.messages, self.specs, context, on_attempt=observe)

    def _on_text(self, text: str) -> None:
        self.run.emit(TextDelta(run_id=self.run.run_id, at=time.time(), agent_id=self.state.id, text=text))

    # -- tools --------------------------------------------------------------------

    def _add_result(self, call: ToolCall, result: str) -> None:
        self._add(Message(role="tool", content=result, tool_call_id=call.id, name=call.name))

    async def _run_tool_call(self, step: int, index: int, call: ToolCall) -> str:
        run, state = self.run, self.state
        try:
            run.budget.take_tool_call()
        except BudgetExceeded as exc:
            await self._stop_run(str(exc))
        state.num_tool_calls += 1
        record_id = f"{state.id}.{step}.{index}"
        started = time.perf_counter()
        run.emit(
            ToolCallStarted(
                run_id=run.run_id, at=time.time(), record_id=record_id, agent_id=state.id,
                step=step, call_id=call.id, tool=call.name, arguments=call.arguments,
            )
        )
        status, result, error = "error", None, None
        try:
            result = await self._invoke(call)
            status = "ok"
            return result
        except ToolError as exc:
            error = str(exc)
            return f"Error: {error}"
        except Exception as exc:  # a bug in the tool: recorded, then propagated
            error = f"{type(exc).__name__}: {exc}"
            raise
        except BaseException:
            status = "cancelled"
            raise
        finally:
            run.emit(
                ToolCallFinished(
                    run_id=run.run_id, at=time.time(), record_id=record_id, agent_id=state.id,
                    tool=call.name, status=status, result=result, error=error,  # type: ignore[arg-type]
                    duration_s=time.perf_counter() - started,
                )
            )

    async def _invoke(self, call: ToolCall) -> str:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            raise ToolError(f"unknown tool {call.name!r}; available tools: {known}")
        try:
            arguments: dict[str, Any] = call.parsed_arguments()
        except ValueError as exc:
            raise ToolError(f"cannot call {call.name}: {exc}") from None
        return await tool(arguments)

    async def _stop_run(self, reason: str) -> None:
        self.run.stop("budget_exceeded", reason)
        await anyio.lowlevel.checkpoint()  # raises the run scope's cancellation here

    def _add(self, message: Message) -> None:
        self.messages.append(message)
        self.run.emit(
            MessageAdded(run_id=self.run.run_id, at=time.time(), agent_id=self.state.id, seq=len(self.messages) - 1, message=message)
        )
