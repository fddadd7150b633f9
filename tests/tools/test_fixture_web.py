"""The fixture web: deterministic from its seed, consistent with its ground truth, served on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tools.fixture_web import FixtureWebServer, generate_world, render_site
from tools.fixture_web.render import search


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_same_seed_same_world_other_seed_other_world() -> None:
    assert generate_world(3).to_json() == generate_world(3).to_json()
    assert generate_world(3).to_json() != generate_world(4).to_json()


def test_world_has_each_kind_and_links_resolve() -> None:
    world = generate_world(5, num_entities=10)
    assert {e.kind for e in world.entities} == {"city", "company", "person"}
    assert len(world.entities) == 10
    for entity in world.entities:
        for target in entity.links.values():
            assert world.by_id(target).id == target


def test_rendered_pages_hold_the_ground_truth(tmp_path: Path) -> None:
    world = generate_world(11, num_entities=9)
    render_site(world, tmp_path)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth["seed"] == 11 and len(truth["entities"]) == 9 and truth["questions"]
    for question in world.questions:
        pages = "".join((tmp_path / world.by_id(i).path.lstrip("/")).read_text() for i in question.entity_ids)
        assert question.answer in pages
    assert (tmp_path / "index.html").exists() and (tmp_path / "search.html").exists()


def test_server_serves_pages_and_search() -> None:
    world = generate_world(2, num_entities=6)
    person = next(e for e in world.entities if e.kind == "person")
    with FixtureWebServer(world) as web:
        assert web.base_url.startswith("http://127.0.0.1:")
        assert person.name in get(web.base_url + "/index.html")
        assert f'href="{person.path}"' in get(f"{web.base_url}/search?q={person.name.split()[0]}")
        results = json.loads(get(f"{web.base_url}/api/search?q={person.name.split()[0]}"))["results"]
        assert results[0]["url"] == web.base_url + person.path


def test_a_latency_delays_each_response_and_concurrent_requests_wait_together() -> None:
    world = generate_world(2, num_entities=6)
    with FixtureWebServer(world, latency_s=0.4) as web:
        started = time.perf_counter()
        assert "Fixture Web" in get(web.base_url + "/index.html")
        assert time.perf_counter() - started >= 0.4
        started = time.perf_counter()
        threads = [threading.Thread(target=get, args=(web.base_url + e.path,)) for e in world.entities]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 0.4 <= time.perf_counter() - started < 6 * 0.4  # together, as a remote site answers
    with pytest.raises(ValueError, match="latency_s must be between 0 and 60"):
        FixtureWebServer(world, latency_s=-1)


def test_command_line_serve_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.fixture_web", "serve", "--seed", "7", "--port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert "Fixture Web" in get(base_url + "/index.html")
    finally:
        process.kill()
        process.wait()


def test_search_ranks_the_entity_named_exactly_first() -> None:
    """"Lomi" is inside "Oslomi" (an earlier page): the search still gives Lomi first."""
    world = generate_world(158, num_entities=16)
    lomi, oslomi = world.by_id("city-3"), world.by_id("city-2")
    assert (lomi.name, oslomi.name) == ("Lomi", "Oslomi")
    assert search(world, "Lomi")[:2] == [lomi, oslomi]
    assert search(world, "lomi")[0] == lomi and search(world, "Oslomi")[0] == oslomi
