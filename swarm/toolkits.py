"""The composition of tool kits: which names in `[tools] enabled` build which kits.

Each factory validates its `[tools.NAME]` options in the tools package; a
`ToolOptionError` there becomes a `TaskFileError` here (exit code 2), message intact.
The tools modules are imported when a kit is built, not when this module is, so
`import swarm.toolkits` stays cheap (Playwright is imported only when a browser kit is
entered).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarm.errors import TaskFileError
from swarm.tooling import ToolKit, ToolKitFactory, ToolRegistry

_KITS = {
    "browser": "tools.browser_kit:browser_kit_from_options",
    "python": "tools.code_kit:python_kit_from_options",
    "web_search": "tools.search:web_search_kit_from_options",
    "mcp": "tools.mcp:mcp_kit_from_options",
}


def default_registry() -> ToolRegistry:
    """The registry with every kit the tools package ships."""
    registry = ToolRegistry()
    for name, target in _KITS.items():
        registry.register(name, _checked(name, target))
    return registry


def _checked(name: str, target: str) -> ToolKitFactory:
    """The factory at `module:function`, imported on first use, its option errors as TaskFileError."""

    def factory(options: Mapping[str, Any], workdir: Path) -> ToolKit:
        from tools.base import ToolOptionError

        module_name, function_name = target.split(":")
        build = getattr(importlib.import_module(module_name), function_name)
        if not isinstance(options, Mapping):
            raise TaskFileError(f"[tools.{name}]: expected a table of options")
        try:
            kit: ToolKit = build(options, workdir)
        except ToolOptionError as error:
            raise TaskFileError(str(error)) from None
        return kit

    return factory
