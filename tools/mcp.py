"""The `mcp` kit: tools of MCP servers (stdio or streamable HTTP) offered to agents.

Task-file options (`[tools.mcp]`): `servers`, a list of tables, each with a `name` and
either `command` (a list: program and arguments, spawned over stdio, with optional
`env` and `cwd`) or `url` (a streamable HTTP endpoint); `call_timeout_s` (per tool
call, default 60) and `connect_timeout_s` (start-up and tool listing, default 30). Each
server's tools are offered as `<server>__<tool>` (characters outside `[A-Za-z0-9_-]`
become `_`), so two servers never collide. Sessions are run-wide: opened when the kit
is entered, shared by all agents, closed when the run ends; they run on a background
event loop thread (`tools.background`), so the caller's cancel scopes never hold them.

Trust: the servers are chosen by whoever writes the task file. Stdio servers run with
the swarm's own privileges, unsandboxed (with the SDK's minimal default environment
plus `env`); their tool descriptions and results reach the model as they are. A tool
result flagged as an error, a protocol error or a call over `call_timeout_s` becomes a
`ToolError` the model sees. Only the first page of each server's tool list is read.

Errors: `McpConnectError` (a `ToolError`) when a server cannot be used at start.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from tools.background import BackgroundLoop
from tools.base import FunctionTool, ToolError, ToolOptionError, cap_text, check_known, option

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class McpConnectError(ToolError):
    """An MCP server could not be started, reached or initialized when the kit was entered."""


@dataclass(frozen=True)
class McpServerConfig:
    """One server: `command` (stdio) or `url` (streamable HTTP)."""

    name: str
    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


class McpKit:
    """Connects to every server when entered; every agent gets all their tools."""

    name = "mcp"

    def __init__(
        self, servers: list[McpServerConfig], *, call_timeout_s: float = 60.0, connect_timeout_s: float = 30.0,
        max_result_chars: int = 16_000,
    ) -> None:  # fmt: skip
        self.servers = servers
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_result_chars = max_result_chars
        self._stack = AsyncExitStack()
        self._tools: list[FunctionTool] | None = None

    async def __aenter__(self) -> McpKit:
        async with AsyncExitStack() as stack:
            # The SDK's sessions run task groups; they live on their own loop (see tools.background).
            background = await stack.enter_async_context(BackgroundLoop())
            tools: list[FunctionTool] = []
            for server in self.servers:
                try:
                    session, _ = await background.enter(_session(server, self.connect_timeout_s))
                    with anyio.fail_after(self.connect_timeout_s):
                        listed = await background.call(session.list_tools)
                except Exception as error:  # whatever the transport raised: the server is unusable
                    raise McpConnectError(f"could not use MCP server {server.name!r}: {_describe(error)}") from error
                tools += [self._tool(server.name, background, session, tool) for tool in listed.tools]
            self._tools = tools
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tools = None
        await self._stack.aclose()

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[list[FunctionTool]]:
        if self._tools is None:
            raise RuntimeError("McpKit.for_agent called outside `async with kit`")
        yield list(self._tools)

    def _tool(self, server: str, background: BackgroundLoop, session: Any, tool: Any) -> FunctionTool:
        try:
            from mcp import MCPError
        except ImportError:  # mcp 1
            from mcp.shared.exceptions import McpError as MCPError

        remote_name = tool.name

        async def call(arguments: dict[str, Any]) -> str:
            try:
                with anyio.fail_after(self.call_timeout_s):
                    result = await background.call(session.call_tool, remote_name, arguments)
            except TimeoutError:
                raise ToolError(f"MCP server {server!r} did not answer within {self.call_timeout_s:g} s") from None
            except MCPError as error:
                raise ToolError(f"MCP server {server!r}: {error}") from None
            text = cap_text(_result_text(result), self.max_result_chars, what="result")
            if _field(result, "is_error", "isError", False):
                raise ToolError(text or f"{remote_name} failed")
            return text

        schema = _field(tool, "input_schema", "inputSchema", None) or {"type": "object", "properties": {}}
        return FunctionTool(
            name=f"{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', remote_name)}"[:64],
            description=f"[{server}] {tool.description or remote_name}",
            parameters=dict(schema),
            function=call,
        )


@asynccontextmanager
async def _session(server: McpServerConfig, timeout_s: float) -> AsyncIterator[Any]:
    """An initialized `ClientSession` on the server's transport."""
    from mcp import ClientSession

    async with AsyncExitStack() as stack:
        if server.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=server.command[0], args=server.command[1:], env=server.env or None, cwd=server.cwd
            )
            streams = await stack.enter_async_context(stdio_client(params))
        else:
            from mcp.client import streamable_http

            # mcp 2 renamed the client; mcp 1 yields a third item (the session id getter).
            client = getattr(streamable_http, "streamable_http_client", None) or streamable_http.streamablehttp_client
            streams = await stack.enter_async_context(client(server.url))
        session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
        with anyio.fail_after(timeout_s):
            await session.initialize()
        yield session


def _describe(error: BaseException) -> str:
    """The first leaf of a (possibly nested) exception group, as `Type: message`."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


def _field(obj: Any, snake: str, camel: str, default: Any) -> Any:
    """A field under its mcp 2 (snake_case) or mcp 1 (camelCase) name."""
    return getattr(obj, snake, getattr(obj, camel, default))


def _result_text(result: Any) -> str:
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{kind or 'content'} omitted: {getattr(block, 'mime_type', getattr(block, 'mimeType', ''))}]")
    return "\n".join(parts)


def mcp_kit_from_options(options: Mapping[str, Any], workdir: Path) -> McpKit:
    """The kit for a task file's `[tools.mcp]` table."""
    check_known(options, "mcp", {"servers", "call_timeout_s", "connect_timeout_s"})
    servers_option = option(options, "mcp", "servers", list)
    servers, names = [], set()
    for i, entry in enumerate(servers_option):
        where = f"[tools.mcp] servers[{i}]"
        if not isinstance(entry, Mapping):
            raise ToolOptionError(f"{where}: expected a table with name and command or url")
        check_known(entry, f"mcp.servers[{i}]", {"name", "command", "url", "env", "cwd"})
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in names:
            raise ToolOptionError(f"{where}.name: expected a unique name of letters, digits, _ or - (got {name!r})")
        names.add(name)
        command, url = entry.get("command"), entry.get("url")
        if (command is None) == (url is None):
            raise ToolOptionError(f"{where}: give exactly one of command (stdio) and url (streamable HTTP)")
        is_command_ok = isinstance(command, list) and command and all(isinstance(c, str) for c in command)
        if command is not None and not is_command_ok:
            raise ToolOptionError(f"{where}.command: expected a non-empty list of strings")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ToolOptionError(f"{where}.url: expected an http(s) URL")
        env = entry.get("env", {})
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise ToolOptionError(f"{where}.env: expected a table of strings")
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ToolOptionError(f"{where}.cwd: expected a string")
        servers.append(McpServerConfig(name=name, command=command, url=url, env=dict(env), cwd=cwd))
    timeouts = {key: option(options, "mcp", key, (int, float), default=default)
                for key, default in (("call_timeout_s", 60.0), ("connect_timeout_s", 30.0))}  # fmt: skip
    for key, value in timeouts.items():
        if value <= 0:
            raise ToolOptionError(f"[tools.mcp] {key}: must be positive")
    return McpKit(
        servers, call_timeout_s=float(timeouts["call_timeout_s"]),
        connect_timeout_s=float(timeouts["connect_timeout_s"]),
    )  # fmt: skip
