"""The composition of tool kits: which names in `[tools] enabled` build which kits."""

from __future__ import annotations

from swarm.tooling import ToolRegistry


def default_registry() -> ToolRegistry:
    """The registry with every kit the tools package ships."""
    registry = ToolRegistry()
    return registry
