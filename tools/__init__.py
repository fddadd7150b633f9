"""Tools that agents call: a browser, sandboxed code execution, search, MCP servers.

Imports nothing from `swarm`, `storage`, `model_runtime` or `tui`; the swarm adapts these
tools through its `Tool` protocol (structural typing, so no import is needed here).
"""
