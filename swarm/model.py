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

from swarm.messages import Message, ToolSpec, Usage

AgentRole = Literal["orchestrator", "subagent"]


@dataclass(frozen=True)
class CallContext:
    """Who is calling, and where streamed text goes; backends may ignore all of it."""

    agent_id: str
    agent_name: str
    role: AgentRole
    on_text: Callable[[str], None] | None = None  # streamed content deltas


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
