"""Value types of a conversation: messages, tool calls, tool declarations, usage.

These are the shapes every backend speaks; backends translate them to and from their
wire format (OpenAI chat completions, Kimi's token format).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """One function call requested by the model; `arguments` is the raw JSON text."""

    model_config = ConfigDict(frozen=True)

    id: str  # Kimi style: functions.NAME:IDX
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object; raises ValueError with a message fit for the model."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON ({exc.msg} at char {exc.pos})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
        return value


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # for role "tool": the call this answers
    name: str | None = None  # for role "tool": the tool's name
    reasoning: str | None = None  # thinking text, when the endpoint returns it


class ToolSpec(BaseModel):
    """A tool as declared to the model."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class Usage(BaseModel):
    """Tokens of one model call or a sum of calls."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


def kimi_tool_call_id(name: str, index: int) -> str:
    """Kimi's tool-call id: `functions.NAME:IDX`, IDX counting from 0 within the turn."""
    return f"functions.{name}:{index}"
