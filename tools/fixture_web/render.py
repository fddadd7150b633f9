"""The fixture web's HTML: an index, a search page, one small page per entity.

Pages are plain, regular HTML (a nav bar, an `h1`, a facts table, one prose paragraph,
links to related entities) so that an accessibility snapshot of any of them is short.
The search results page is rendered per query by the server (`search_page`).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tools.fixture_web.world import KINDS, Entity, World

_NAV = '<nav><a href="/index.html">Home</a> | <a href="/search.html">Search</a></nav>'
_FORM = (
    '<form action="/search" method="get" role="search">'
    '<label for="q">Search</label> <input id="q" name="q" type="search" value="{value}"> '
    '<button type="submit">Search</button></form>'
)


def render_site(world: World, out_dir: Path) -> Path:
    """Writes every page and `ground_truth.json` under `out_dir`; returns `out_dir`."""
    (out_dir / "entity").mkdir(parents=True, exist_ok=True)
    (out_dir / "index.html").write_text(index_page(world))
    (out_dir / "search.html").write_text(search_page(world, None))
    for entity in world.entities:
        (out_dir / entity.path.lstrip("/")).write_text(entity_page(world, entity))
    (out_dir / "ground_truth.json").write_text(world.to_json())
    return out_dir


def index_page(world: World) -> str:
    sections = []
    for kind in KINDS:
        items = "".join(_item(entity) for entity in world.entities if entity.kind == kind)
        sections.append(f"<h2>{kind.capitalize()} pages</h2><ul>{items}</ul>")
    body = f"<h1>Fixture Web</h1>{_FORM.format(value='')}{''.join(sections)}"
    return _page("Fixture Web", body)


def entity_page(world: World, entity: Entity) -> str:
    rows = "".join(
        f"<tr><th>{_label(key)}</th><td>{_value(world, entity, key)}</td></tr>"
        for key in sorted(entity.attributes)
    )
    related = [other for other in world.entities if entity.id in other.links.values()]
    related_html = (
        f"<h2>Related</h2><ul>{''.join(_item(other) for other in related)}</ul>" if related else ""
    )
    body = (
        f"<h1>{html.escape(entity.name)}</h1><p>Kind: {entity.kind}</p>"
        f"<table><caption>Facts</caption>{rows}</table>"
        f"<p>{prose(world, entity, is_html=True)}</p>{related_html}"
    )
    return _page(entity.name, body)


def search_page(world: World, query: str | None) -> str:
    """The search form, and when `query` is given, the entities matching all its words."""
    body = f"<h1>Search</h1>{_FORM.format(value=html.escape(query or '', quote=True))}"
    if query is not None:
        hits = search(world, query)
        items = "".join(
            f'<li><a href="{e.path}">{html.escape(e.name)}</a> ({e.kind})</li>' for e in hits
        )
        body += f"<h2>{len(hits)} results for “{html.escape(query)}”</h2><ul>{items}</ul>"
    return _page("Search", body)


def search(world: World, query: str) -> list[Entity]:
    """Entities whose name or prose contains every word of `query`: the entity named exactly
    `query` first (a name can be inside another: "Morfen", "Morfenos"), then name matches."""
    words = re.findall(r"\w+", query.lower())
    if not words:
        return []
    hits = []
    for entity in world.entities:
        name, text = entity.name.lower(), prose(world, entity, is_html=False).lower()
        if all(word in text for word in words):
            hits.append((name.split() != words, not all(word in name for word in words), entity.id, entity))
    return [entity for *_, entity in sorted(hits, key=lambda hit: hit[:3])]


def prose(world: World, entity: Entity, *, is_html: bool) -> str:
    """The entity's paragraph, restating its facts in words."""
    a = entity.attributes

    def ref(key: str) -> str:
        target = world.by_id(entity.links[key])
        name = html.escape(target.name) if is_html else target.name
        return f'<a href="{target.path}">{name}</a>' if is_html else name

    name = html.escape(entity.name) if is_html else entity.name
    if entity.kind == "city":
        return (
            f"{name} is a city in {a['country']}, founded in {a['founded']}, with a population "
            f"of {a['population']}. It is known for {a['landmark']}."
        )
    if entity.kind == "company":
        return (
            f"{name} is a {a['industry']} company founded in {a['founded']}. It is headquartered "
            f"in {ref('headquarters')} and led by {ref('ceo')}. It employs {a['employees']} people."
        )
    return (
        f"{name} is a {a['occupation']} born in {a['born']}. They work for {ref('employer')} "
        f"and live in {ref('home_city')}."
    )


def _item(entity: Entity) -> str:
    return f'<li><a href="{entity.path}">{html.escape(entity.name)}</a></li>'


def _label(key: str) -> str:
    return "CEO" if key == "ceo" else key.replace("_", " ").capitalize()


def _value(world: World, entity: Entity, key: str) -> str:
    if key in entity.links:
        target = world.by_id(entity.links[key])
        return f'<a href="{target.path}">{html.escape(target.name)}</a>'
    return html.escape(str(entity.attributes[key]))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{_NAV}<main>{body}</main></body></html>\n"
    )
