"""The fixture web's world: fictional people, companies and cities generated from a seed.

Same seed, same world, byte for byte: the pages, the search results and the ground
truth (`World.to_json`) are all derived from it, so a test or a demo model can check an
agent's answer against facts that exist nowhere else. It is not realistic text; it is
small and regular on purpose (a tiny model must learn to browse it).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("city", "company", "person")

_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "dor", "sel", "tu", "ba", "ri", "zan", "pe", "mor",
    "li", "an", "tes", "qui", "vo", "ne", "gal", "os", "fen", "da", "ul",
)  # fmt: skip
_COUNTRIES = ("Arvenia", "Belmora", "Castavia", "Dunmark", "Estoria")
_INDUSTRIES = ("shipbuilding", "software", "textiles", "mining", "biotech", "publishing")
_OCCUPATIONS = ("engineer", "chemist", "architect", "economist", "pilot", "historian")
_CITY_FEATURES = ("a clock tower", "a salt lake", "a glass bridge", "an old harbour", "a red fortress")


@dataclass(frozen=True)
class Entity:
    """One page of the fixture web: its facts (`attributes`) and links (`links`, by id)."""

    id: str
    kind: str
    name: str
    attributes: dict[str, str | int]
    links: dict[str, str] = field(default_factory=dict)
    """Attribute name to the linked entity's id (e.g. "headquarters" -> "city-3")."""

    @property
    def slug(self) -> str:
        return self.id

    @property
    def path(self) -> str:
        return f"/entity/{self.id}.html"


@dataclass(frozen=True)
class Question:
    """A question whose answer follows from the pages, with the entities it needs."""

    question: str
    answer: str
    entity_ids: list[str]


@dataclass(frozen=True)
class World:
    """Every entity of one seed, and questions with their ground-truth answers."""

    seed: int
    entities: list[Entity]
    questions: list[Question]

    def by_id(self, entity_id: str) -> Entity:
        for entity in self.entities:
            if entity.id == entity_id:
                return entity
        raise KeyError(entity_id)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "seed": self.seed,
            "entities": [asdict(entity) | {"path": entity.path} for entity in self.entities],
            "questions": [asdict(question) for question in self.questions],
        }
        return json.dumps(data, indent=2, sort_keys=True)


def generate_world(seed: int, num_entities: int = 24) -> World:
    """A world of `num_entities` entities (at least 3), about a third of each kind."""
    if num_entities < 3:
        raise ValueError("num_entities must be at least 3 (one of each kind)")
    rng = random.Random(seed)
    names: set[str] = set()
    counts = {kind: num_entities // 3 + (1 if i < num_entities % 3 else 0) for i, kind in enumerate(KINDS)}
    ids = {kind: [f"{kind}-{i + 1}" for i in range(counts[kind])] for kind in KINDS}

    def pick(kind: str) -> str:
        return rng.choice(ids[kind])

    entities = []
    for city_id in ids["city"]:
        entities.append(Entity(
            id=city_id, kind="city", name=_name(rng, names, words=1),
            attributes={
                "country": rng.choice(_COUNTRIES),
                "population": rng.randrange(20, 3000) * 1000,
                "founded": rng.randrange(900, 1900),
                "landmark": rng.choice(_CITY_FEATURES),
            },
        ))  # fmt: skip
    for company_id in ids["company"]:
        entities.append(Entity(
            id=company_id, kind="company",
            name=_name(rng, names, words=1) + " " + rng.choice(("Works", "Labs", "Group", "Holdings")),
            attributes={
                "industry": rng.choice(_INDUSTRIES),
                "founded": rng.randrange(1850, 2020),
                "employees": rng.randrange(10, 50_000),
            },
            links={"headquarters": pick("city"), "ceo": pick("person")},
        ))  # fmt: skip
    for person_id in ids["person"]:
        entities.append(Entity(
            id=person_id, kind="person", name=_name(rng, names, words=2),
            attributes={"born": rng.randrange(1930, 2000), "occupation": rng.choice(_OCCUPATIONS)},
            links={"employer": pick("company"), "home_city": pick("city")},
        ))  # fmt: skip
    entities = [_with_link_names(entity, entities) for entity in entities]
    world = World(seed=seed, entities=entities, questions=[])
    return World(seed=seed, entities=entities, questions=_questions(world, rng))


def _name(rng: random.Random, taken: set[str], *, words: int) -> str:
    while True:
        parts = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randrange(2, 4))).capitalize() for _ in range(words)]
        name = " ".join(parts)
        if name not in taken:
            taken.add(name)
            return name


def _with_link_names(entity: Entity, entities: list[Entity]) -> Entity:
    """The entity with each link's target name also among its attributes (as on the page)."""
    names = {other.id: other.name for other in entities}
    attributes = dict(entity.attributes) | {key: names[target] for key, target in entity.links.items()}
    return Entity(id=entity.id, kind=entity.kind, name=entity.name, attributes=attributes, links=entity.links)


def _questions(world: World, rng: random.Random) -> list[Question]:
    questions = []
    for entity in world.entities:
        a, name, ids = entity.attributes, entity.name, [entity.id]
        if entity.kind == "company":
            city = world.by_id(entity.links["headquarters"])
            ceo = world.by_id(entity.links["ceo"])
            questions += [
                Question(f"In what year was {name} founded?", str(a["founded"]), ids),
                Question(f"In which country is the headquarters of {name}?", str(city.attributes["country"]), ids + [city.id]),
                Question(f"In what year was the CEO of {name} born?", str(ceo.attributes["born"]), ids + [ceo.id]),
            ]
        elif entity.kind == "person":
            employer = world.by_id(entity.links["employer"])
            industry = str(employer.attributes["industry"])
            questions.append(Question(f"What industry does {name}'s employer work in?", industry, ids + [employer.id]))
    rng.shuffle(questions)
    return questions
