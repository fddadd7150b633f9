"""The mcp kit against a small MCP server written for the tests, over stdio and streamable HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from tools.base import FunctionTool, ToolError, ToolOptionError
from tools.mcp import McpConnectError, McpKit, McpServerConfig, mcp_kit_from_options

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).with_name("mcp_echo_server.py"))


@pytest.fixture(scope="module")
async def stdio_tools(anyio_backend: str) -> AsyncIterator[dict[str, FunctionTool]]:
    kit = McpKit([McpServerConfig(name="echo", command=[sys.executable, SERVER])], call_timeout_s=1.5)
    async with kit, kit.for_agent("agent-1") as tools:
        yield {tool.name: tool for tool in tools}


@pytest.fixture(scope="module")
def http_server_url() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, SERVER, "http"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}/mcp"
    finally:
        process.kill()
        process.wait()


async def test_tools_are_prefixed_with_the_server_name(stdio_tools: dict[str, FunctionTool]) -> None:
    assert set(stdio_tools) == {"echo__echo", "echo__add", "echo__fail", "echo__wait"}
    add = stdio_tools["echo__add"]
    assert add.description == "[echo] Adds two integers."
    assert set(add.parameters["properties"]) == {"a", "b"}


async def test_call_returns_the_servers_text(stdio_tools: dict[str, FunctionTool]) -> None:
    assert await stdio_tools["echo__echo"]({"text": "hello"}) == "hello"
    assert await stdio_tools["echo__add"]({"a": 2, "b": 40}) == "42"


async def test_tool_failure_and_bad_arguments_are_tool_errors(stdio_tools: dict[str, FunctionTool]) -> None:
    with pytest.raises(ToolError, match="fail"):
        await stdio_tools["echo__fail"]({"reason": "broken on purpose"})
    with pytest.raises(ToolError, match="a"):
        await stdio_tools["echo__add"]({"a": "not a number"})


async def test_slow_call_times_out_as_a_tool_error(stdio_tools: dict[str, FunctionTool]) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ToolError, match="did not answer within 1.5 s"):
            await stdio_tools["echo__wait"]({"seconds": 60})
    assert await stdio_tools["echo__wait"]({"seconds": 0}) == "done"  # the session still works


async def test_streamable_http_server(http_server_url: str) -> None:
    kit = McpKit([McpServerConfig(name="remote", url=http_server_url)], call_timeout_s=20)
    async with kit, kit.for_agent("agent-1") as tools:
        by_name = {tool.name: tool for tool in tools}
        assert await by_name["remote__add"]({"a": 1, "b": 2}) == "3"


def test_options_build_the_server_list(tmp_path: Path) -> None:
    kit = mcp_kit_from_options(
        {"servers": [{"name": "a", "command": ["prog", "--flag"], "env": {"K": "v"}}, {"name": "b", "url": "http://h/mcp"}]},
        tmp_path,
    )
    assert kit.servers == [
        McpServerConfig(name="a", command=["prog", "--flag"], env={"K": "v"}),
        McpServerConfig(name="b", url="http://h/mcp"),
    ]


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([{"name": "a"}], r"servers\[0\]: give exactly one"),
        ([{"name": "a b", "url": "http://h"}], r"servers\[0\].name"),
        ([{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://h"}], r"servers\[1\].name"),
        ([{"name": "a", "command": "prog"}], r"servers\[0\].command"),
        ([{"name": "a", "url": "file:///x"}], r"servers\[0\].url"),
    ],
)
def test_bad_server_options_name_the_field(servers: list[dict[str, object]], message: str, tmp_path: Path) -> None:
    with pytest.raises(ToolOptionError, match=message):
        mcp_kit_from_options({"servers": servers}, tmp_path)


async def test_unusable_server_fails_the_kit_with_its_name() -> None:
    kit = McpKit([McpServerConfig(name="broken", command=[sys.executable, "-c", "pass"])], call_timeout_s=10)
    with pytest.raises(McpConnectError, match="'broken'"):
        async with kit:
            pass
