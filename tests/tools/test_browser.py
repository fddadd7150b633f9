"""The browser against the fixture web on loopback, with real Chromium: reading, acting, refusing."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tools.base import RefusedError, ToolError
from tools.background import BackgroundLoop
from tools.browser import Browser, BrowserConfig, launch_chromium, open_context
from tools.origins import OriginAllowlist
from tools.fixture_web import FixtureWebServer, World, generate_world

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(7, num_entities=12)


@pytest.fixture(scope="module")
def web(world: World) -> Iterator[FixtureWebServer]:
    with FixtureWebServer(world) as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FixtureWebServer]:
    """A second site on another loopback port: an origin outside the allowlist."""
    with FixtureWebServer(generate_world(8, num_entities=3)) as server:
        yield server


@pytest.fixture(scope="module")
async def chromium(anyio_backend: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, BrowserConfig())
        yield browser
        await browser.close()


@pytest.fixture(params=["own context", "shared context"])
async def browser(request: pytest.FixtureRequest, chromium: Any, web: FixtureWebServer) -> AsyncIterator[Browser]:
    """Every behaviour holds both for a Browser with its own context and for one page of a
    context shared with another agent's Browser (which is open, and idle, meanwhile)."""
    if request.param == "own context":
        async with Browser([web.base_url], chromium=chromium) as browser:
            yield browser
        return
    async with BackgroundLoop() as background, AsyncExitStack() as stack:
        shared = await open_context(stack, chromium, background, OriginAllowlist([web.base_url]), BrowserConfig())
        async with Browser([web.base_url], shared=shared) as browser, Browser([web.base_url], shared=shared):
            yield browser


def ref_of(snapshot: str, pattern: str) -> str:
    for line in snapshot.splitlines():
        if re.search(pattern, line) and "[ref=" in line:
            return line.split("[ref=")[1].split("]")[0]
    raise AssertionError(f"no line with a ref matches {pattern!r} in:\n{snapshot}")


async def test_navigate_shows_facts_and_prose_with_refs(browser: Browser, web: FixtureWebServer, world: World) -> None:
    company = next(e for e in world.entities if e.kind == "company")
    snapshot = await browser.navigate(web.base_url + company.path)
    assert f"URL: {web.base_url}{company.path}" in snapshot
    assert f'heading "{company.name}"' in snapshot
    assert f'cell "{company.attributes["founded"]}"' in snapshot
    ceo = world.by_id(company.links["ceo"])
    assert re.search(rf'link "{ceo.name}" \[ref=\w+\]', snapshot)
    assert not re.search(r'heading "[^"]*" \[level=1\] \[ref=', snapshot)  # refs only where one can act


async def test_click_follows_a_link(browser: Browser, web: FixtureWebServer, world: World) -> None:
    company = next(e for e in world.entities if e.kind == "company")
    city = world.by_id(company.links["headquarters"])
    snapshot = await browser.navigate(web.base_url + company.path)
    snapshot = await browser.click(ref_of(snapshot, f'link "{city.name}"'))
    assert f"URL: {web.base_url}{city.path}" in snapshot
    assert f'cell "{city.attributes["country"]}"' in snapshot


async def test_type_into_search_form_and_submit(browser: Browser, web: FixtureWebServer, world: World) -> None:
    person = next(e for e in world.entities if e.kind == "person")
    snapshot = await browser.navigate(web.base_url + "/search.html")
    snapshot = await browser.type(ref_of(snapshot, "searchbox"), person.name, submit=True)
    assert "/search?q=" in snapshot
    snapshot = await browser.click(ref_of(snapshot, f'link "{person.name}"'))
    assert f"URL: {web.base_url}{person.path}" in snapshot


async def test_find_returns_only_matching_lines(browser: Browser, web: FixtureWebServer, world: World) -> None:
    await browser.navigate(web.base_url + "/index.html")
    city = next(e for e in world.entities if e.kind == "city")
    found = await browser.find(city.name.lower())
    lines = found.splitlines()
    assert lines[0].startswith("1 matches")
    assert re.fullmatch(rf'- link "{city.name}" \[ref=\w+\]:?', lines[1])
    await browser.click(ref_of(found, city.name))  # a ref from find can be used
    assert "no line" in await browser.find("no such text anywhere")


async def test_back_returns_to_previous_page(browser: Browser, web: FixtureWebServer) -> None:
    await browser.navigate(web.base_url + "/index.html")
    await browser.navigate(web.base_url + "/search.html")
    assert f"URL: {web.base_url}/index.html" in await browser.back()


async def test_unknown_ref_is_a_tool_error(browser: Browser, web: FixtureWebServer) -> None:
    await browser.navigate(web.base_url + "/index.html")
    with pytest.raises(ToolError, match="unknown ref"):
        await browser.click("e9999")


async def test_origin_outside_allowlist_is_refused(
    browser: Browser, elsewhere: FixtureWebServer, web: FixtureWebServer
) -> None:
    num_requests = len(elsewhere.requested_paths)
    with pytest.raises(RefusedError, match="not an allowed origin"):
        await browser.navigate(elsewhere.base_url + "/index.html")
    with pytest.raises(RefusedError, match="not an allowed origin"):
        await browser.navigate("https://example.com/")
    assert len(elsewhere.requested_paths) == num_requests


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:text/html,<h1>x</h1>", "javascript:alert(1)"])
async def test_non_http_urls_are_refused(browser: Browser, url: str) -> None:
    with pytest.raises(RefusedError, match="not an http"):
        await browser.navigate(url)


async def test_redirect_to_refused_origin_is_refused(
    browser: Browser, web: FixtureWebServer, elsewhere: FixtureWebServer
) -> None:
    await browser.navigate(web.base_url + "/index.html")
    num_requests = len(elsewhere.requested_paths)
    with pytest.raises(RefusedError, match="not an allowed origin"):
        await browser.navigate(f"{web.base_url}/_test/redirect?to={elsewhere.base_url}/index.html")
    assert len(elsewhere.requested_paths) == num_requests  # refused before any byte left
    assert browser.page.url == web.base_url + "/index.html"


async def test_redirect_within_allowlist_is_followed(browser: Browser, web: FixtureWebServer) -> None:
    snapshot = await browser.navigate(f"{web.base_url}/_test/redirect?to={web.base_url}/search.html")
    assert f"URL: {web.base_url}/search.html" in snapshot


async def test_downloads_are_refused(browser: Browser, web: FixtureWebServer) -> None:
    with pytest.raises(RefusedError, match="downloads"):
        await browser.navigate(web.base_url + "/_test/download")
    assert "Fixture Web" in await browser.navigate(web.base_url + "/index.html")


async def test_load_then_evaluate_reads_the_page_without_a_snapshot(
    browser: Browser, web: FixtureWebServer, world: World, elsewhere: FixtureWebServer
) -> None:
    company = next(e for e in world.entities if e.kind == "company")
    assert await browser.load(web.base_url + company.path) is None
    title = await browser.evaluate("() => document.querySelector('h1').textContent")
    assert title == company.name
    cells = await browser.evaluate("() => [...document.querySelectorAll('td')].map(td => td.textContent)")
    assert str(company.attributes["founded"]) in cells
    num_requests = len(elsewhere.requested_paths)
    with pytest.raises(RefusedError, match="not an allowed origin"):
        await browser.load(elsewhere.base_url + "/index.html")  # the allowlist holds as for navigate
    assert len(elsewhere.requested_paths) == num_requests
    assert browser.page.url == web.base_url + company.path
    with pytest.raises(ToolError, match="could not read"):
        await browser.evaluate("() => { throw new Error('broken script') }")


async def test_huge_page_snapshot_is_capped_and_find_still_works(chromium: Any, web: FixtureWebServer) -> None:
    config = BrowserConfig(max_snapshot_chars=2_000, max_find_lines=5)
    async with Browser([web.base_url], chromium=chromium, config=config) as browser:
        snapshot = await browser.navigate(web.base_url + "/_test/big?n=1500")
        assert len(snapshot) < 2_400 and "snapshot cut" in snapshot and "browser_find" in snapshot
        found = await browser.find("link number 1499")
        assert re.search(r'link "link number 1499" \[ref=\w+\]', found)
        assert "more matches not shown" in await browser.find("link number")


async def test_agents_get_isolated_contexts(chromium: Any, web: FixtureWebServer) -> None:
    async with Browser([web.base_url], chromium=chromium) as first, Browser([web.base_url], chromium=chromium) as second:
        await first.navigate(web.base_url + "/index.html")
        await first.page.evaluate("localStorage.setItem('secret', 'agent-1')")
        await second.navigate(web.base_url + "/index.html")
        assert await second.page.evaluate("localStorage.getItem('secret')") is None
        assert first.page.context is not second.page.context


async def test_shared_context_gives_each_agent_its_own_page_and_refusals(
    chromium: Any, web: FixtureWebServer, elsewhere: FixtureWebServer
) -> None:
    async with BackgroundLoop() as background, AsyncExitStack() as stack:
        shared = await open_context(stack, chromium, background, OriginAllowlist([web.base_url]), BrowserConfig())
        first = await stack.enter_async_context(Browser([web.base_url], shared=shared))
        async with Browser([web.base_url], shared=shared) as second:
            assert first.page.context is second.page.context and first.page is not second.page
            await first.navigate(web.base_url + "/index.html")
            redirect = f"{web.base_url}/_test/redirect?to={elsewhere.base_url}/index.html"
            with pytest.raises(RefusedError, match="not an allowed origin"):
                await second.navigate(redirect)
            with pytest.raises(RefusedError, match="not an allowed origin"):  # an https origin: a refused tunnel
                await second.navigate(f"{web.base_url}/_test/redirect?to=https://example.com/")
            assert first._refused == []  # each page hears only its own refusals
            assert second._refused == [f"{elsewhere.base_url}/index.html", "https://example.com/"]
            assert first.page.url == web.base_url + "/index.html"
        assert second.page.is_closed() and not first.page.is_closed()  # closing an agent closes its page only
        assert "Title: Search" in await first.navigate(web.base_url + "/search.html")
        opener = first.page
        async with first.page.expect_popup():
            await opener.evaluate(f"window.open('{web.base_url}/index.html')")
        assert first.page is not opener and len(shared.pages) == 2  # the agent follows its new tab
        await first.__aexit__(None, None, None)
        assert shared.pages == []  # the agent's tabs close with it, though the context lives on


async def test_back_with_no_history_is_a_tool_error(browser: Browser) -> None:
    with pytest.raises(ToolError, match="no previous page"):
        await browser.back()


async def test_standalone_browser_launches_its_own_chromium(web: FixtureWebServer) -> None:
    async with Browser([web.base_url]) as browser:
        assert "Fixture Web" in await browser.navigate(web.base_url + "/index.html")
