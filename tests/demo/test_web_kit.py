"""The demo's compact web tools: the same observations from the live kit and from the world."""

from __future__ import annotations

import shutil

import pytest

from demo.web_kit import FixtureWebKit, facts_from_page, facts_text, search_text
from tools.fixture_web.server import FixtureWebServer
from tools.fixture_web.world import generate_world

def test_facts_are_the_title_then_a_line_per_row() -> None:
    page = {"title": "Ulbates Quika", "rows": [["Born", "1956"], ["Employer", "Ulda Group"], ["Occupation", "pilot"]]}
    assert facts_from_page(page) == "Ulbates Quika\nBorn: 1956\nEmployer: Ulda Group\nOccupation: pilot"


def test_a_page_without_facts_says_so() -> None:
    assert facts_from_page({"title": "Search", "rows": []}) == "Search\n(no facts table on this page)"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
@pytest.mark.anyio
async def test_live_kit_shows_what_the_generator_writes() -> None:
    world = generate_world(21, num_entities=12)
    with FixtureWebServer(world) as web:
        async with FixtureWebKit(web.base_url) as kit, kit.for_agent("a") as tools:
            search, navigate = tools
            for entity in world.entities[::4]:
                assert await search({"query": entity.name}) == search_text(world, entity.name)
                assert await navigate({"url": web.base_url + entity.path}) == facts_text(entity)
                assert await navigate({"url": entity.path}) == facts_text(entity)  # a path is on the site
