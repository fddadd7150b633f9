"""The fixture web: a small deterministic website about fictional entities, for tests and demos.

`generate_world(seed)` makes the entities and the ground truth; `render_site` writes the
pages to a folder (what the local `web_search` backend indexes); `FixtureWebServer`
serves them on loopback. It holds no real data and is not meant to be exposed.
"""

from __future__ import annotations

from tools.fixture_web.render import render_site
from tools.fixture_web.server import FixtureWebServer
from tools.fixture_web.world import Entity, Question, World, generate_world

__all__ = ["Entity", "FixtureWebServer", "Question", "World", "generate_world", "render_site"]
