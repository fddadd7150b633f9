"""What every tool shares: the error a model can fix, a function-backed tool, output caps.

    ToolError                 the call failed in a way the model can see and correct
    ├── RefusedError          the tool refuses the request on policy (origin, scheme, download)
    ├── ToolArgumentError     the arguments do not match the tool's schema
    ├── ToolOptionError       a kit's task-file options (`[tools.NAME]`) are invalid
    ├── SandboxUnavailableError   (tools.code) bubblewrap is missing
    └── McpConnectError           (tools.mcp) an MCP server cannot be used at start

`FunctionTool` satisfies the swarm's `Tool` protocol structurally, so this package never
imports `swarm`. `cap_text` is how every tool keeps a huge result out of a model's context:
it cuts and says so, rather than silently truncating. `http_ssl_context` is the TLS
context every tool's HTTP client shares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl


@cache
def http_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context, built once per process for every tool's
    `httpx.AsyncClient(verify=...)`: each client otherwise builds its own and loads the CA
    bundle (~20 ms of the event loop's time), and a run opens a client per kit."""
    import httpx

    return httpx.create_ssl_context()


class ToolError(Exception):
    """A tool call failed in a way the model should see as an observation and may fix."""


class RefusedError(ToolError):
    """The tool refused the request on policy (an origin, a scheme, a download)."""


class ToolArgumentError(ToolError):
    """The call's arguments are missing, of the wrong type, or out of range."""


class ToolOptionError(ToolError):
    """A kit's options from the task file are invalid; the message names the option."""


@dataclass(frozen=True)
class FunctionTool:
    """One model-callable function: a name, a description, a JSON schema and a coroutine."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[[dict[str, Any]], Awaitable[str]] = field(repr=False)

    async def __call__(self, arguments: dict[str, Any]) -> str:
        return await self.function(arguments)


def schema(properties: Mapping[str, Mapping[str, Any]], required: list[str]) -> dict[str, Any]:
    """A JSON schema for an arguments object with these properties."""
    return {
        "type": "object",
        "properties": {key: dict(value) for key, value in properties.items()},
        "required": list(required),
        "additionalProperties": False,
    }


def argument(arguments: Mapping[str, Any], key: str, kind: type, *, default: Any = ...) -> Any:
    """`arguments[key]` checked against `kind`; a bad or missing value is a `ToolArgumentError`."""
    if key not in arguments:
        if default is ...:
            raise ToolArgumentError(f"missing required argument {key!r}")
        return default
    value = arguments[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ToolArgumentError(f"argument {key!r} must be of type {kind.__name__}")
    return value


def cap_text(text: str, max_chars: int, *, what: str = "output") -> str:
    """`text` cut to `max_chars` characters, with a note saying how much was left out."""
    if len(text) <= max_chars:
        return text
    num_cut = len(text) - max_chars
    return f"{text[:max_chars]}\n[{what} cut: {num_cut} more characters not shown]"


def option(
    options: Mapping[str, Any], kit: str, key: str, kind: type | tuple[type, ...], *, default: Any = ...
) -> Any:
    """`options[key]` of kit `kit`, checked against `kind`; problems are `ToolOptionError`s."""
    if key not in options:
        if default is ...:
            raise ToolOptionError(f"[tools.{kit}] {key}: required option is missing")
        return default
    value = options[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ToolOptionError(f"[tools.{kit}] {key}: expected {names}, got {value!r}")
    return value


def check_known(options: Mapping[str, Any], kit: str, known: set[str]) -> None:
    """Rejects option names the kit does not know (a typo would otherwise be ignored)."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise ToolOptionError(
            f"[tools.{kit}] {unknown[0]}: unknown option (known: {', '.join(sorted(known))})"
        )
