"""The demo's task family: "for each of these N entities, find attributes X and Y".

A `WideTask` names one kind of entity (city, company, person), two of the attributes
its fixture pages show (by their page labels, e.g. "Population", "Home city") and N
entities of one seeded world. This module writes the texts both modes use (the user's
prompt, the orchestrator's sub-task for one entity, a sub-agent's answer, the final
table) and scores a final answer against the world's ground truth. The texts are
short and regular on purpose: a small model trained on them must copy names and
values between them, and each copy is one a small transformer learns early (an
induction copy: find where what was just written occurred before, continue it). So a
sub-agent answers with a table row that names its entity and labels each value,
`| 2 | Ridara Group | Headquarters: Litesra | Industry: biotech |`: after writing a
label it finds the same label on the page and copies what follows it there, instead of
looking a label up and writing only its value. Entities are numbered in the prompt
(`1 Lope, 2 Zanra`), and a sub-task starts with its entity's number, which is also the
index of the orchestrator's `assign_task` call (`assign_task:2` -> `2 Zanra: ...`) and
the first cell of the sub-agent's row: the orchestrator finds the k-th name and the
k-th row by a number it writes anyway, not by remembering which came before. The final
table is those rows as they came back, under a header.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tools.fixture_web.world import Entity, World, generate_world

PLURALS = {"city": "cities", "company": "companies", "person": "people"}


def page_label(key: str) -> str:
    """An attribute key as the fixture page's table labels it (render._label)."""
    return "CEO" if key == "ceo" else key.replace("_", " ").capitalize()


def labels_of(kind: str, world: World) -> list[str]:
    entity = next(e for e in world.entities if e.kind == kind)
    return sorted(page_label(key) for key in entity.attributes)


def value_of(entity: Entity, label: str) -> str:
    for key, value in entity.attributes.items():
        if page_label(key) == label:
            return str(value)
    raise KeyError(f"{entity.id} has no attribute labelled {label!r}")


def table_row(number: int, name: str, facts: list[tuple[str, str]]) -> str:
    return "| " + " | ".join([str(number), name, *(f"{label}: {value}" for label, value in facts)]) + " |"


def table_text(kind: str, labels: tuple[str, str] | list[str], rows: list[str]) -> str:
    return "\n".join([f"| # | {kind} | {labels[0]} | {labels[1]} |", "|---|---|---|---|", *rows])


@dataclass(frozen=True)
class WideTask:
    """One wide lookup over a world: `entities` (in the prompt's order) x `labels`."""

    kind: str
    labels: tuple[str, str]
    entities: tuple[Entity, ...]

    def number(self, entity: Entity) -> int:
        """The entity's number in the prompt's list, from 1: also the index of the
        orchestrator's `assign_task` call for it (its `create_subagent` call is 0)."""
        return self.entities.index(entity) + 1

    def prompt(self) -> str:
        names = ", ".join(f"{i} {e.name}" for i, e in enumerate(self.entities, start=1))
        what = PLURALS[self.kind]
        return f"For each of these {len(self.entities)} {what}, find {self.labels[0]} and {self.labels[1]}: {names}. Answer with a table."

    def subtask(self, entity: Entity, name: str | None = None) -> str:
        """What the orchestrator asks one sub-agent to do (`name`: the entity's name as the
        orchestrator wrote it, when it mis-copied it)."""
        return f"{self.number(entity)} {name or entity.name}: {self.labels[0]}, {self.labels[1]}"

    def answer(self, entity: Entity) -> str:
        """A sub-agent's final answer: a table row, its entity's number and name, then each
        value asked for after its label, in the order asked."""
        return table_row(self.number(entity), entity.name, [(label, value_of(entity, label)) for label in self.labels])

    def table(self, answers: list[str] | None = None) -> str:
        """The final answer: a header, then the sub-agents' rows as they came (`answers`, one
        per entity, default to the ground truth)."""
        answers = answers if answers is not None else [self.answer(e) for e in self.entities]
        return table_text(self.kind, self.labels, answers)

    def ground_truth(self) -> list[dict[str, str]]:
        return [
            {"entity": e.name, "attribute": label, "value": value_of(e, label)}
            for e in self.entities
            for label in self.labels
        ]


MAX_ENTITIES = 16


def world_for(seed: int, num_entities: int) -> World:
    """A world with `MAX_ENTITIES` entities of each kind, whatever the task's size.

    Pages are numbered per kind (`/entity/person-12.html`), so a world only as large as
    its task would show two-digit page numbers only in wide tasks; sub-agents, trained on
    small ones, then never saw one (trial6 copied every one-digit path and no two-digit one).
    """
    if not 1 <= num_entities <= MAX_ENTITIES:
        raise ValueError(f"num_entities must be between 1 and {MAX_ENTITIES}, not {num_entities}")
    return generate_world(seed, num_entities=3 * MAX_ENTITIES)


def sample_task(world: World, rng: random.Random, num_entities: int, kind: str | None = None) -> WideTask:
    kind = kind or rng.choice(sorted(PLURALS))
    pool = [e for e in world.entities if e.kind == kind]
    if num_entities > len(pool):
        raise ValueError(f"the world has {len(pool)} {PLURALS[kind]}, fewer than {num_entities}")
    first, second = rng.sample(labels_of(kind, world), 2)
    return WideTask(kind=kind, labels=(first, second), entities=tuple(rng.sample(pool, num_entities)))


def seeded_task(seed: int, num_entities: int) -> tuple[World, WideTask]:
    """The world of `seed` and its task of `num_entities` entities: what the training data,
    the eval set and `swarm demo` all mean by "seed"."""
    world = world_for(seed, num_entities)
    return world, sample_task(world, random.Random(seed), num_entities)


def parse_table(text: str) -> dict[str, list[str]]:
    """Rows of a Markdown table by their first cell (lower-cased): the other cells."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip().startswith("|") or re.fullmatch(r"[\s|:-]*", line):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0].isdigit():  # the row's number
            cells = cells[1:]
        if cells:
            rows.setdefault(cells[0].lower(), cells[1:])
    return rows


def item_accuracy(task: WideTask, answer: str | None) -> tuple[int, int]:
    """(items right, items asked): an item is one entity's value of one attribute."""
    rows = parse_table(answer or "")
    num_right = 0
    for entity in task.entities:
        cells = rows.get(entity.name.lower(), [])
        for i, label in enumerate(task.labels):
            if i >= len(cells):
                continue
            cell = cells[i].lower()
            cell = cell.removeprefix(f"{label.lower()}:").strip()  # "Label: value" or just "value"
            if cell == value_of(entity, label).lower():
                num_right += 1
    return num_right, 2 * len(task.entities)
