"""The demo's `fixture_web` kit: a search tool and a browser whose observations are compact.

A small model cannot read a whole accessibility snapshot (an entity page's is about
1,000 characters, ~400 tokens) many times per conversation, so this kit shows the
same real pages in fewer tokens:

    web_search(query)      the fixture site's own search (`/api/search`, over HTTP),
                           best hit only, as its path on the site: "Name: /entity/x.html"
                           (a small model copies a short path more surely than a URL
                           with the server's random port in it)
    browser_navigate(url)  real Chromium (tools.browser.Browser, allowlisted to the
                           site) loads the page (a path is taken relative to the site); the
                           observation is the page's title and its facts table, read in the
                           page (`FACTS_SCRIPT`: the table's text as Chromium laid it out; a
                           script costs Chromium a few ms where Playwright's snapshot,
                           set up anew on every document, costs ~25):
                           "Name\\nLabel: value\\n..."

Every agent's browser is a page of one shared browser context (`BrowserKit(share_context=
True)`): the site is read-only, so sharing cookies costs nothing, and 16 sub-agents opening
a context each at once cost Chromium ~4x more wall time on 2 cores than 16 pages of one.
Every agent here browses, so its page opens while its first turn runs (`lazy_browser(warm=
True)`); `swarm demo` goes further and keeps Chromium open across its runs with pages
waiting (`warm=WarmBrowsers(...)`).

`search_text` and `facts_text` compute the same observations from a `World` without
a browser; the trajectory generator uses them (thousands of pages), and a test checks
them against the live kit's outputs. Not a general browser kit: it only reads pages
laid out like the fixture web's.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx

from demo.tasks import page_label
from tools.base import FunctionTool, ToolError, argument, http_ssl_context, schema
from tools.browser import Browser, BrowserConfig
from tools.browser_kit import BrowserKit, WarmBrowsers
from tools.fixture_web.render import search
from tools.fixture_web.world import Entity, World


def search_text(world: World, query: str) -> str:
    """What `web_search(query)` shows: the best hit as "Name: /path"."""
    hits = search(world, query)
    if not hits:
        return f"no results for {query!r}"
    return f"{hits[0].name}: {hits[0].path}"


def fact_line(label: str, value: object) -> str:
    """One fact as `browser_navigate` shows it, the same from the world and from the page."""
    return f"{label}: {value}"


def facts_text(entity: Entity) -> str:
    """What `browser_navigate` shows for an entity page: its title, then its facts."""
    rows = [fact_line(page_label(key), entity.attributes[key]) for key in sorted(entity.attributes)]
    return "\n".join([entity.name, *rows])


FACTS_SCRIPT = """() => ({
    title: document.title,
    rows: Array.from(document.querySelectorAll("table tr"), row => [row.querySelector("th"), row.querySelector("td")])
        .filter(([label, value]) => label && value)
        .map(([label, value]) => [label.innerText.trim(), value.innerText.trim()]),
})"""
"""Reads an entity page's title and facts table in the page (DOM text as Chromium laid it out)."""


def facts_from_page(page: dict[str, Any]) -> str:
    """The observation for what `FACTS_SCRIPT` read: the title, then a "Label: value" line per fact."""
    title, rows = str(page.get("title", "")), page.get("rows") or []
    if not rows:
        return f"{title}\n(no facts table on this page)"
    return "\n".join([title, *(fact_line(label, value) for label, value in rows)])


class FixtureWebKit(BrowserKit):
    """`web_search` and a compact `browser_navigate` over one fixture site at `base_url`:
    the browser kit's Chromium, allowed only that site, plus an HTTP client for search."""

    name = "fixture_web"

    def __init__(self, base_url: str, config: BrowserConfig | None = None, *, warm: WarmBrowsers | None = None) -> None:
        """`warm`: Chromium kept open across runs, with pages waiting (`WarmBrowsers([base_url])`)."""
        self.base_url = base_url.rstrip("/")
        super().__init__([self.base_url], config, share_context=True, warm=warm)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> FixtureWebKit:
        await super().__aenter__()
        try:
            self._client = await self._stack.enter_async_context(httpx.AsyncClient(timeout=15.0, verify=http_ssl_context()))
        except BaseException:
            await super().__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        self._client = None

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[Sequence[FunctionTool]]:
        if self._client is None:
            raise RuntimeError("FixtureWebKit.for_agent called outside `async with kit`")
        async with self.lazy_browser(warm=True) as browser:  # every agent here browses: its page opens during its first turn
            yield [self._search_tool(self._client), _navigate_tool(browser.get, self.base_url)]

    def _search_tool(self, client: httpx.AsyncClient) -> FunctionTool:
        async def call(arguments: dict[str, Any]) -> str:
            query = argument(arguments, "query", str)
            try:
                response = await client.get(f"{self.base_url}/api/search", params={"q": query, "n": 1})
                response.raise_for_status()
                results = response.json()["results"]
            except (httpx.HTTPError, ValueError, KeyError) as error:
                raise ToolError(f"the search failed: {error}") from None
            if not results:
                return f"no results for {query!r}"
            return f"{results[0]['title']}: {urlsplit(results[0]['url']).path}"

        return FunctionTool(
            "web_search", "Search the site; returns the best page as 'Name: /path'.",
            schema({"query": {"type": "string"}}, ["query"]), call,
        )  # fmt: skip


def _navigate_tool(browser: Callable[[], Awaitable[Browser]], base_url: str) -> FunctionTool:
    async def call(arguments: dict[str, Any]) -> str:
        url = urljoin(base_url + "/", argument(arguments, "url", str))  # a path is on the site
        page = await browser()
        await page.load(url)
        return facts_from_page(await page.evaluate(FACTS_SCRIPT))

    return FunctionTool(
        "browser_navigate", "Open a page of the site (a path such as /entity/x.html, or a URL); returns its title and facts.",
        schema({"url": {"type": "string"}}, ["url"]), call,
    )  # fmt: skip
