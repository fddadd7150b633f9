"""`web_search(query)`: a search tool over a pluggable backend.

Backends satisfy `SearchBackend` (one async `search` method). Shipped:
- `LocalSearchBackend`: SQLite FTS5 over a folder of HTML pages (the fixture web's
  rendered site), ranked by BM25 with titles weighted up; runs in a worker thread.
- `HttpSearchBackend`: GETs `endpoint?q=...&n=...` and reads JSON
  `{"results": [{"title", "url", "snippet"}]}`; the place to adapt a real search API.

What it is not: a crawler (the local index is built once, from files), or a filter on
what results say: snippets of hostile pages reach the model as they are, capped.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx

from tools.base import FunctionTool, ToolError, ToolOptionError, argument, cap_text, check_known, http_ssl_context, option, schema


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str


class SearchBackend(Protocol):
    """Where `web_search` gets its results."""

    async def search(self, query: str, *, max_results: int) -> list[SearchHit]: ...


class LocalSearchBackend:
    """Full-text search over the `.html` files under `pages_dir`, indexed when built."""

    def __init__(self, pages_dir: Path, *, base_url: str = "") -> None:
        if not pages_dir.is_dir():
            raise ToolError(f"pages_dir {pages_dir} is not a folder")
        self.pages_dir = pages_dir
        self.base_url = base_url.rstrip("/")
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = anyio.Lock()
        self.num_pages = 0

    @classmethod
    async def build(cls, pages_dir: Path, *, base_url: str = "") -> LocalSearchBackend:
        backend = cls(pages_dir, base_url=base_url)
        await anyio.to_thread.run_sync(backend._index)
        return backend

    def _index(self) -> None:
        self._db.execute("CREATE VIRTUAL TABLE pages USING fts5(url UNINDEXED, title, body)")
        rows = []
        for path in sorted(self.pages_dir.rglob("*.html")):
            title, body = extract_text(path.read_text(errors="replace"))
            url = f"{self.base_url}/{path.relative_to(self.pages_dir).as_posix()}"
            rows.append((url, title or path.name, body))
        self._db.executemany("INSERT INTO pages VALUES (?, ?, ?)", rows)
        self._db.commit()
        self.num_pages = len(rows)

    async def search(self, query: str, *, max_results: int) -> list[SearchHit]:
        words = re.findall(r"\w+", query)
        if not words:
            raise ToolError("the query has no words to search for")
        async with self._lock:
            return await anyio.to_thread.run_sync(self._search, words, max_results)

    def _search(self, words: list[str], max_results: int) -> list[SearchHit]:
        sql = (
            "SELECT url, title, snippet(pages, 2, '', '', ' … ', 16) FROM pages "
            "WHERE pages MATCH ? ORDER BY bm25(pages, 0.0, 5.0, 1.0) LIMIT ?"
        )
        quoted = [f'"{word}"' for word in words]  # quoting keeps FTS5 operators out of user text
        rows = self._db.execute(sql, (" ".join(quoted), max_results)).fetchall()
        if not rows and len(words) > 1:
            rows = self._db.execute(sql, (" OR ".join(quoted), max_results)).fetchall()
        return [SearchHit(title=title, url=url, snippet=snippet) for url, title, snippet in rows]


class HttpSearchBackend:
    """A JSON search API: `GET endpoint?q=QUERY&n=MAX` -> `{"results": [...]}`."""

    def __init__(self, endpoint: str, *, timeout_s: float = 15.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport, verify=http_ssl_context())

    async def aclose(self) -> None:
        await self._client.aclose()

    async def search(self, query: str, *, max_results: int) -> list[SearchHit]:
        try:
            response = await self._client.get(self.endpoint, params={"q": query, "n": max_results})
            response.raise_for_status()
            results: Sequence[dict[str, Any]] = response.json()["results"]
            return [
                SearchHit(str(r.get("title", "")), str(r.get("url", "")), str(r.get("snippet", "")))
                for r in results[:max_results]
            ]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ToolError(f"the search service failed: {type(error).__name__}: {error}") from None


class WebSearchKit:
    """The `web_search` kit: builds its backend when entered; every agent shares it."""

    name = "web_search"

    def __init__(self, *, pages_dir: Path | None = None, base_url: str = "", endpoint: str | None = None,
                 max_results: int = 5) -> None:  # fmt: skip
        if (pages_dir is None) == (endpoint is None):
            raise ValueError("WebSearchKit needs exactly one of pages_dir and endpoint")
        self.pages_dir, self.base_url, self.endpoint = pages_dir, base_url, endpoint
        self.max_results = max_results
        self._backend: LocalSearchBackend | HttpSearchBackend | None = None

    async def __aenter__(self) -> WebSearchKit:
        if self.pages_dir is not None:
            self._backend = await LocalSearchBackend.build(self.pages_dir, base_url=self.base_url)
        elif self.endpoint is not None:
            self._backend = HttpSearchBackend(self.endpoint)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if isinstance(self._backend, HttpSearchBackend):
            await self._backend.aclose()
        self._backend = None

    @asynccontextmanager
    async def for_agent(self, agent_id: str) -> AsyncIterator[list[FunctionTool]]:
        if self._backend is None:
            raise RuntimeError("WebSearchKit.for_agent called outside `async with kit`")
        yield [web_search_tool(self._backend, max_results=self.max_results)]


def web_search_kit_from_options(options: Mapping[str, Any], workdir: Path) -> WebSearchKit:
    """The kit for `[tools.web_search]`: `pages_dir` (+ `base_url`) or `endpoint`; `max_results`."""
    check_known(options, "web_search", {"pages_dir", "base_url", "endpoint", "max_results"})
    pages_dir = option(options, "web_search", "pages_dir", str, default=None)
    endpoint = option(options, "web_search", "endpoint", str, default=None)
    if (pages_dir is None) == (endpoint is None):
        raise ToolOptionError("[tools.web_search] pages_dir: give either pages_dir (local index) or endpoint (HTTP API)")
    if pages_dir is not None and not Path(pages_dir).is_dir():
        raise ToolOptionError(f"[tools.web_search] pages_dir: {pages_dir!r} is not a folder")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ToolOptionError(f"[tools.web_search] endpoint: {endpoint!r} is not an http(s) URL")
    max_results = option(options, "web_search", "max_results", int, default=5)
    if not 1 <= max_results <= 50:
        raise ToolOptionError("[tools.web_search] max_results: must be between 1 and 50")
    return WebSearchKit(
        pages_dir=Path(pages_dir) if pages_dir else None, endpoint=endpoint, max_results=max_results,
        base_url=option(options, "web_search", "base_url", str, default=""),
    )  # fmt: skip


def web_search_tool(backend: SearchBackend, *, max_results: int = 5, max_chars: int = 4_000) -> FunctionTool:
    """The model's `web_search(query)` tool over `backend`."""

    async def call(arguments: dict[str, Any]) -> str:
        query = argument(arguments, "query", str)
        hits = await backend.search(query, max_results=max_results)
        if not hits:
            return f"no results for {query!r}"
        lines = [f"{i}. {hit.title}\n   {hit.url}\n   {hit.snippet}" for i, hit in enumerate(hits, 1)]
        return cap_text("\n".join(lines), max_chars, what="results")

    return FunctionTool(
        name="web_search",
        description="Search the web; returns titles, URLs and snippets of the best matching pages.",
        parameters=schema({"query": {"type": "string", "description": "words to search for"}}, ["query"]),
        function=call,
    )


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title: list[str] = []
        self.body: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "nav"):
            self._skip += 1
        self._in_title = self._in_title or tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "nav"):
            self._skip = max(0, self._skip - 1)
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.body.append(data)


def extract_text(html: str) -> tuple[str, str]:
    """The page's title and its visible text (scripts, styles and nav bars left out)."""
    parser = _TextExtractor()
    parser.feed(html)
    return " ".join("".join(parser.title).split()), " ".join(" ".join(parser.body).split())
