"""The tool seam: what an agent can call, and the registry that turns names into tools.

A `Tool` is one function the model may call. A `ToolKit` is a named group of tools with
run-wide resources (a browser process, an MCP connection) that hands each agent its own
tools (a browser context, a sandbox workspace) for the agent's lifetime. The task file's
`[tools] enabled` list names kits; `ToolRegistry` maps those names to kit factories.

Tools signal a failure the model can correct by raising `tools.base.ToolError`; the agent
returns it to the model as an observation. Any other exception is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from swarm.errors import TaskFileError


@runtime_checkable
class Tool(Protocol):
    """One function the model can call."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments object."""
        ...

    async def __call__(self, arguments: dict[str, Any]) -> str:
        """Runs the call; returns the observation text shown to the model."""
        ...


class ToolKit(Protocol):
    """A named group of tools; entered once per run, opened once per agent.

    The coordinator exits a kit (and each agent's tools) in the same cancel scope it
    entered it in, possibly while that scope is being cancelled (a timeout, Ctrl-C, a
    cancelled sub-agent). A kit whose clean-up must await (closing a browser context,
    killing a process) shields those awaits itself, so nothing outlives the run.
    """

    name: str

    async def __aenter__(self) -> ToolKit: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def for_agent(self, agent_id: str) -> AbstractAsyncContextManager[Sequence[Tool]]:
        """The agent's own tools, released when the agent ends."""
        ...


ToolKitFactory = Callable[[Mapping[str, Any], Path], ToolKit]
"""Builds a kit from its task-file options (`[tools.NAME]`) and the run's work folder."""


class ToolRegistry:
    """Kit factories by name; the tools package's kits are registered in `swarm.toolkits`."""

    def __init__(self) -> None:
        self._factories: dict[str, ToolKitFactory] = {}

    def register(self, name: str, factory: ToolKitFactory) -> None:
        self._factories[name] = factory

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(
        self, enabled: Sequence[str], options: Mapping[str, Mapping[str, Any]], workdir: Path
    ) -> list[ToolKit]:
        """Kits for the enabled names; an unknown name is a task-file error."""
        unknown = [name for name in enabled if name not in self._factories]
        if unknown:
            known = ", ".join(self.names) or "none"
            raise TaskFileError(
                f"[tools].enabled: unknown tool {unknown[0]!r} (available: {known})"
            )
        return [self._factories[name](options.get(name, {}), workdir) for name in enabled]
