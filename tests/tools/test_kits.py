"""The kits through the swarm's seam: `default_registry().build(...)`, enter, open for an agent, call."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from swarm.errors import TaskFileError
from swarm.toolkits import default_registry
from swarm.tooling import Tool
from tools.base import ToolError
from tools.browser_kit import BrowserKit, WarmBrowsers
from tools.fixture_web import FixtureWebServer, generate_world, render_site

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def web() -> Iterator[FixtureWebServer]:
    with FixtureWebServer(generate_world(1, num_entities=6)) as server:
        yield server


def test_registry_names_every_kit() -> None:
    assert default_registry().names == ["browser", "mcp", "python", "web_search"]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
async def test_python_kit_through_the_swarm_seam(tmp_path: Path) -> None:
    [kit] = default_registry().build(["python"], {"python": {"timeout_s": 10, "memory_mb": 256}}, tmp_path)
    async with kit:
        async with kit.for_agent("agent-1") as tools:
            [tool] = tools
            assert isinstance(tool, Tool) and tool.name == "python"
            assert await tool({"code": "open('f.txt', 'w').write('x'); print(2 ** 10)"}) == "1024"
    assert (tmp_path / "python" / "agent-1" / "f.txt").read_text() == "x"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
@pytest.mark.parametrize("share_context", [False, True])
async def test_browser_kit_through_the_swarm_seam(tmp_path: Path, web: FixtureWebServer, share_context: bool) -> None:
    options = {"browser": {"allowed_origins": [web.base_url], "share_context": share_context}}
    [kit] = default_registry().build(["browser"], options, tmp_path)
    async with kit:
        chromium = kit._chromium

        def num_pages() -> int:
            return sum(len(context.pages) for context in chromium.contexts)

        async with kit.for_agent("agent-1") as tools, kit.open_browser() as other:
            by_name = {tool.name: tool for tool in tools}
            assert set(by_name) == {
                "browser_navigate", "browser_snapshot", "browser_click", "browser_type", "browser_find", "browser_back",
            }  # fmt: skip
            assert all(isinstance(tool, Tool) for tool in tools)
            assert num_pages() == 1  # the other agent's: this one has not browsed yet, so it has no page
            assert "Fixture Web" in await by_name["browser_navigate"]({"url": web.base_url + "/index.html"})
            assert num_pages() == 2 and len(chromium.contexts) == (1 if share_context else 2)
            assert other.page.url == "about:blank"  # another agent's page, not this one's
            assert (kit._shared is not None and other.page.context is kit._shared) == share_context
        assert num_pages() == 0  # both closed with their agents


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
async def test_a_warm_browser_opens_before_its_first_call_and_closes_with_its_agent(web: FixtureWebServer) -> None:
    async with BrowserKit([web.base_url], share_context=True) as kit:
        assert kit._shared is not None
        async with kit.lazy_browser(warm=True) as browser:
            with anyio.fail_after(20):
                while not kit._shared.pages:  # opening in the background: nothing has asked for it
                    await anyio.sleep(0.01)
            page = (await browser.get()).page
            assert kit._shared.pages == [page]
        assert kit._shared.pages == []
        async with kit.lazy_browser(warm=True):
            pass  # left at once, while its page may still be opening: closed all the same
        assert kit._shared.pages == []


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
async def test_kits_borrowing_warm_browsers_use_their_waiting_pages_and_leave_chromium_open(web: FixtureWebServer) -> None:
    async with WarmBrowsers([web.base_url], spare_pages=2) as warm:
        assert warm.context is not None
        waiting = list(warm.context.pages)
        assert len(waiting) == 2
        for _ in range(2):  # one run, then another on the same Chromium
            async with BrowserKit([web.base_url], warm=warm) as kit:
                assert kit._chromium is warm.chromium and kit.share_context
                async with kit.for_agent("agent-1") as tools, kit.for_agent("agent-2") as others:
                    for agent_tools in (tools, others):
                        navigate = next(tool for tool in agent_tools if tool.name == "browser_navigate")
                        assert "Fixture Web" in await navigate({"url": web.base_url + "/index.html"})
                    assert set(warm.context.pages) == set(waiting)  # the waiting pages, no new ones
                async with kit.for_agent("agent-3") as tools:  # none waits now: it opens one
                    navigate = next(tool for tool in tools if tool.name == "browser_navigate")
                    await navigate({"url": web.base_url + "/index.html"})
                    assert len(warm.context.pages) == 1 and warm.context.pages[0] not in waiting
            assert warm.chromium.is_connected() and warm.context.pages == []
            await warm.refill()
            waiting = list(warm.context.pages)
            assert len(waiting) == 2
    with pytest.raises(ValueError, match="the warm browsers allow"):
        BrowserKit(["http://127.0.0.1:1"], warm=warm)


def kit_options(name: str, web: FixtureWebServer, tmp_path: Path) -> dict[str, dict[str, object]]:
    server = [sys.executable, str(Path(__file__).with_name("mcp_echo_server.py"))]
    return {
        "browser": {"browser": {"allowed_origins": [web.base_url]}},
        "mcp": {"mcp": {"servers": [{"name": "echo", "command": server}]}},
        "python": {},
        "web_search": {"web_search": {"pages_dir": str(render_site(web.world, tmp_path / "site"))}},
    }[name]


@pytest.mark.parametrize("name", ["browser", "mcp", "python", "web_search"])
async def test_kit_opened_inside_cancel_scopes_closes_outside_them(
    name: str, web: FixtureWebServer, tmp_path: Path
) -> None:
    """The swarm enters kits and agents' tools inside cancel scopes and closes them, shielded, after."""
    if name == "browser" and shutil.which("chromium") is None or name == "python" and shutil.which("bwrap") is None:
        pytest.skip("needs chromium and bubblewrap")
    [kit] = default_registry().build([name], kit_options(name, web, tmp_path), tmp_path)
    stack, agent_stack = AsyncExitStack(), AsyncExitStack()
    try:
        with anyio.CancelScope(), anyio.move_on_after(60):
            await stack.enter_async_context(kit)
            with anyio.CancelScope():
                tools = await agent_stack.enter_async_context(kit.for_agent("agent-1"))
                assert tools
    finally:
        with anyio.CancelScope(shield=True):
            await agent_stack.aclose()
            await stack.aclose()


@pytest.mark.parametrize(
    ("enabled", "options", "message"),
    [
        (["browser"], {}, r"\[tools.browser\] allowed_origins: required"),
        (["browser"], {"browser": {"allowed_origins": ["nope"]}}, r"\[tools.browser\] allowed_origins"),
        (["browser"], {"browser": {"allowed_origins": ["http://a"], "share_context": "yes"}}, r"\[tools.browser\] share_context"),
        (["python"], {"python": {"timeout_s": "slow"}}, r"\[tools.python\] timeout_s"),
        (["python"], {"python": {"memory_mb": 1}}, r"\[tools.python\] memory_mb"),
        (["web_search"], {"web_search": {}}, r"\[tools.web_search\] pages_dir"),
        (["mcp"], {"mcp": {"servers": "x"}}, r"\[tools.mcp\] servers"),
        (["shell"], {}, r"unknown tool 'shell'"),
    ],
)
def test_bad_options_are_task_file_errors(
    enabled: list[str], options: dict[str, dict[str, object]], message: str, tmp_path: Path
) -> None:
    with pytest.raises(TaskFileError, match=message):
        default_registry().build(enabled, options, tmp_path)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
async def test_a_browser_that_cannot_open_is_a_tool_error_and_the_agent_goes_on(tmp_path: Path, web: FixtureWebServer) -> None:
    [kit] = default_registry().build(["browser"], {"browser": {"allowed_origins": [web.base_url]}}, tmp_path)
    async with kit:
        async with kit.for_agent("agent-1") as tools:
            await kit._chromium.close()  # Chromium gone (crashed) before this agent's first browser call
            navigate = next(tool for tool in tools if tool.name == "browser_navigate")
            with pytest.raises(ToolError, match="could not open a browser"):
                await navigate({"url": web.base_url + "/index.html"})
