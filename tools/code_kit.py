"""The `python` kit: each agent gets the `python` tool with its own sandbox workspace.

Task-file options (`[tools.python]`): `timeout_s`, `memory_mb`, `max_processes`,
`max_file_mb`, `max_output_bytes` (see `SandboxLimits`). Workspaces live under the
run's work folder at `python/<agent id>/` and are kept after the agent ends (they are
the agent's artefacts); processes never outlive a call, so there is nothing else to
release. See `tools.code` for what the sandbox does and does not guarantee.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from tools.base import FunctionTool, ToolOptionError, check_known, option
from tools.code import SandboxLimits, python_tool

_OPTIONS = {"timeout_s": (0.1, 3600.0), "memory_mb": (32, 1 << 20), "max_processes": (1, 4096),
            "max_file_mb": (1, 1 << 20), "max_output_bytes": (100, 10_000_000)}  # fmt: skip


class PythonKit:
    """Nothing run-wide to start; `for_agent` makes the agent's workspace and tool."""

    name = "python"

    def __init__(self, workdir: Path, limits: SandboxLimits | None = None) -> None:
        self.workdir = workdir
        self.limits = limits or SandboxLimits()

    async def __aenter__(self) -> PythonKit:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def workspace(self, agent_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", agent_id).lstrip(".") or "agent"
        return self.workdir / "python" / safe

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[list[FunctionTool]]:
        workspace = self.workspace(agent_id)
        workspace.mkdir(parents=True, exist_ok=True)
        yield [python_tool(workspace, self.limits)]


def python_kit_from_options(options: Mapping[str, Any], workdir: Path) -> PythonKit:
    """The kit for a task file's `[tools.python]` table."""
    check_known(options, "python", set(_OPTIONS))
    if shutil.which("bwrap") is None:
        raise ToolOptionError("[tools.python]: bubblewrap (bwrap) is not installed; code cannot run sandboxed")
    defaults = {f.name: f.default for f in fields(SandboxLimits)}
    values = {}
    for key, (low, high) in _OPTIONS.items():
        kind = (int, float) if isinstance(low, float) else int
        value = option(options, "python", key, kind, default=defaults[key])
        if not low <= value <= high:
            raise ToolOptionError(f"[tools.python] {key}: must be between {low} and {high}, got {value}")
        values[key] = value
    return PythonKit(workdir, SandboxLimits(**values))
