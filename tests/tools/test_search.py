"""web_search: the local FTS5 backend over the fixture web's pages, and the HTTP backend."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tools.base import ToolError, ToolOptionError, http_ssl_context
from tools.fixture_web import FixtureWebServer, World, generate_world, render_site
from tools.search import HttpSearchBackend, LocalSearchBackend, web_search_kit_from_options, web_search_tool

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(21, num_entities=15)


@pytest.fixture(scope="module")
def pages_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_site(world, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def web(world: World) -> Iterator[FixtureWebServer]:
    with FixtureWebServer(world) as server:
        yield server


async def test_local_search_finds_an_entity_page_first(world: World, pages_dir: Path) -> None:
    backend = await LocalSearchBackend.build(pages_dir, base_url="http://site")
    assert backend.num_pages == len(world.entities) + 2  # plus index and search pages
    company = next(e for e in world.entities if e.kind == "company")
    hits = await backend.search(company.name, max_results=3)
    assert hits[0].url == "http://site" + company.path
    assert hits[0].title == company.name


async def test_ground_truth_is_not_indexed(pages_dir: Path) -> None:
    backend = await LocalSearchBackend.build(pages_dir)
    assert all(not hit.url.endswith(".json") for hit in await backend.search("seed entities", max_results=50))


async def test_query_syntax_cannot_break_the_index(pages_dir: Path) -> None:
    backend = await LocalSearchBackend.build(pages_dir)
    for query in ['" OR * NEAR(', "title:x AND -y", "'; DROP TABLE pages; --"]:
        await backend.search(query, max_results=3)  # no exception: words are quoted
    with pytest.raises(ToolError, match="no words"):
        await backend.search("!!!", max_results=3)


async def test_tool_formats_results_and_says_when_none(world: World, pages_dir: Path) -> None:
    tool = web_search_tool(await LocalSearchBackend.build(pages_dir, base_url="http://site"), max_results=2)
    city = next(e for e in world.entities if e.kind == "city")
    text = await tool({"query": f"{city.name} city"})
    assert text.startswith(f"1. {city.name}\n   http://site{city.path}\n")
    assert await tool({"query": "zzzqqq"}) == "no results for 'zzzqqq'"


async def test_http_backend_reads_a_json_search_api(world: World, web: FixtureWebServer) -> None:
    person = next(e for e in world.entities if e.kind == "person")
    backend = HttpSearchBackend(web.base_url + "/api/search")
    try:
        hits = await backend.search(person.name, max_results=2)
    finally:
        await backend.aclose()
    assert hits[0].url == web.base_url + person.path


async def test_http_backend_failure_is_a_tool_error(web: FixtureWebServer) -> None:
    backend = HttpSearchBackend(web.base_url + "/no-such-api")
    try:
        with pytest.raises(ToolError, match="search service failed"):
            await backend.search("x", max_results=2)
    finally:
        await backend.aclose()


async def test_kit_from_options(pages_dir: Path, tmp_path: Path) -> None:
    kit = web_search_kit_from_options({"pages_dir": str(pages_dir), "max_results": 1}, tmp_path)
    async with kit, kit.for_agent("agent-1") as tools:
        assert [tool.name for tool in tools] == ["web_search"]
        assert (await tools[0]({"query": "Fixture Web"})).count("\n   ") == 2  # one hit: url + snippet


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "pages_dir: give either"),
        ({"pages_dir": "/no/such/dir"}, "is not a folder"),
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"endpoint": "http://x", "max_results": 0}, "max_results"),
        ({"endpoint": "http://x", "colour": 1}, "colour: unknown option"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ToolOptionError, match=message):
        web_search_kit_from_options(options, tmp_path)


def test_http_clients_share_one_verifying_tls_context() -> None:
    context = http_ssl_context()
    assert context is http_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    backend = HttpSearchBackend("https://search.example/api")
    try:
        assert backend._client._transport._pool._ssl_context is context
    finally:
        anyio.run(backend.aclose)
