"""The model seam: `ChatModel`, the one protocol every backend implements.

Backends: `openai:` (any OpenAI-compatible endpoint), `local:` (our embedded runtime),
`scripted:` (a deterministic replay, a test double). Retries and adaptive concurrency
wrap any backend from outside (`swarm.backends.retry`), so backends stay simple: one call,
one attempt, and errors mapped onto `swarm.errors.ModelError`'s subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from swarm.messages import Message, ToolCall, ToolSpec, Usage

AgentRole = Literal["orchestrator", "subagent"]


@dataclass(frozen=True)
class CallContext:
    """Who is calling, and where streamed text goes; backends may ignore all of it.

    `on_tool_call` receives each tool call as soon as the stream has it whole, before the
    response ends, so the agent can start it while the model writes the rest (an
    orchestrator's sub-agents start while it is still assigning). A backend that calls it
    puts every call it passed first in the response's `tool_calls`, in the same order
    (`with_early_calls`), even if its final parse disagrees: those calls have run."""

    agent_id: str
    agent_name: str
    role: AgentRole
    on_text: Callable[[str], None] | None = None  # streamed content deltas
    on_tool_call: Callable[[ToolCall], None] | None = None  # tool calls complete mid-stream


def with_early_calls(early: Sequence[ToolCall], calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    """A response's tool calls given the ones already handed to `on_tool_call`: those first,
    then the rest of `calls` (the same list when the stream and the final parse agree)."""
    if [call.id for call in calls[: len(early)]] == [call.id for call in early]:
        return (*early, *calls[len(early) :])
    started = {call.id for call in early}
    return (*early, *(call for call in calls if call.id not in started))


@dataclass(frozen=True)
class ModelResponse:
    """The assistant message of one model call, with its accounting."""

    message: Message
    usage: Usage
    model: str
    finish_reason: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None  # time to the first streamed token, when streamed


class ChatModel(Protocol):
    """A chat model that may call tools."""

    @property
    def name(self) -> str:
        """The model's name as recorded in traces."""
        ...

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext
    ) -> ModelResponse:
        """One attempt at one model call; raises a `ModelError` subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Releases connections or engines."""
        ...
