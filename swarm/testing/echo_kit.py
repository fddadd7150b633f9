"""`EchoKit`: a tool kit with one trivial tool, `echo(text)`. A test double.

It lets tests and benchmarks count tool calls and check per-agent lifetimes (opened and
closed agents are tracked) without a browser or a sandbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from tools.base import ToolError


class EchoTool:
    name = "echo"
    description = "Returns its text unchanged."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    async def __call__(self, arguments: dict[str, Any]) -> str:
        text = arguments.get("text")
        if not isinstance(text, str):
            raise ToolError("echo needs a string 'text'")
        return f"echo: {text}"


class EchoKit:
    name = "echo"

    def __init__(self) -> None:
        self.is_entered = False
        self.open_agents: set[str] = set()
        self.num_opened = 0

    async def __aenter__(self) -> EchoKit:
        self.is_entered = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.is_entered = False

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[Sequence[EchoTool]]:
        self.open_agents.add(agent_id)
        self.num_opened += 1
        try:
            yield [EchoTool()]
        finally:
            self.open_agents.discard(agent_id)
