"""The demo's task family: "for each of these N entities, find attributes X and Y".

A `WideTask` names one kind of entity (city, company, person), some of the attributes
its fixture pages show, by their page labels ("Population", "Home city"; two in the demo,
one to four in training if asked, so that a conversation holds more lookups to learn
from), and N entities of one seeded world. This module writes the texts both modes use (the user's
prompt, the orchestrator's sub-task for one entity, a sub-agent's answer, the final
table) and scores a final answer against the world's ground truth. The texts are
short and regular on purpose: a small model trained on them must copy names and
values between them, and each copy is one a small transformer learns early (an
induction copy: find where what was just written occurred before, continue it). So a
sub-agent answers with a table row that names its entity and labels each value,
`| 2 | Ridara Group | Headquarters: Litesra | Industry: biotech |`: after writing a
label it finds the same label on the page and copies what follows it there, instead of
looking a label up and writing only its value. Entities are numbered in the prompt
(`1 Lope, 2 Zanra`; the demo vocabulary makes every number up to 16 one token), and a
sub-task is its entity's number and name (`2 Zanra`): the number is also the index of
the orchestrator's `assign_task` call (`assign_task:2`) and the first cell of the
sub-agent's row, so the orchestrator finds the k-th name and the k-th row by a number
it writes anyway, not by remembering which came before. What to find is said once, in
the sub-agent's system prompt (`finder_prompt`: "Find Headquarters and Industry."),
not in every sub-task: the orchestrator's one long turn stays short. The final table
is the rows as they came back, under a header.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
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


def table_text(kind: str, labels: Sequence[str], rows: list[str]) -> str:
    return "\n".join(["| " + " | ".join(["#", kind, *labels]) + " |", "|---" * (len(labels) + 2) + "|", *rows])


def label_list(labels: Sequence[str]) -> str:
    """"A", "A and B", "A, B and C": the attributes as the prompts name them."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def split_label_list(text: str) -> list[str]:
    """The inverse of `label_list` (labels contain neither ", " nor " and ")."""
    head, _, last = text.rpartition(" and ")
    return [*head.split(", "), last] if head else [last]


@dataclass(frozen=True)
class WideTask:
    """One wide lookup over a world: `entities` (in the prompt's order) x `labels`."""

    kind: str
    labels: tuple[str, ...]
    entities: tuple[Entity, ...]

    def number(self, entity: Entity) -> int:
        """The entity's number in the prompt's list, from 1: also the index of the
        orchestrator's `assign_task` call for it (its `create_subagent` call is 0)."""
        return self.entities.index(entity) + 1

    def prompt(self) -> str:
        names = ", ".join(f"{i} {e.name}" for i, e in enumerate(self.entities, start=1))
        what = PLURALS[self.kind]
        return f"For each of these {len(self.entities)} {what}, find {label_list(self.labels)}: {names}. Answer with a table."

    def finder_prompt(self) -> str:
        """The system prompt the orchestrator gives its sub-agents: what to find."""
        return f"Find {label_list(self.labels)}."

    def subtask(self, entity: Entity) -> str:
        """What the orchestrator asks one sub-agent to do: its entity's number and name."""
        return f"{self.number(entity)} {entity.name}"

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


DEMO_NUM_LABELS = 2
"""Attributes a demo task asks for (training draws 1 to `MAX_LABELS`)."""
MAX_LABELS = 4
"""Every kind of entity has at least this many attributes."""


def sample_task(world: World, rng: random.Random, num_entities: int, kind: str | None = None, num_labels: int = DEMO_NUM_LABELS) -> WideTask:
    kind = kind or rng.choice(sorted(PLURALS))
    pool = [e for e in world.entities if e.kind == kind]
    if num_entities > len(pool):
        raise ValueError(f"the world has {len(pool)} {PLURALS[kind]}, fewer than {num_entities}")
    labels = tuple(rng.sample(labels_of(kind, world), num_labels))
    return WideTask(kind=kind, labels=labels, entities=tuple(rng.sample(pool, num_entities)))


def seeded_task(seed: int, num_entities: int, num_labels: int = DEMO_NUM_LABELS) -> tuple[World, WideTask]:
    """The world of `seed` and its task of `num_entities` entities: what the training data,
    the eval set and `swarm demo` all mean by "seed"."""
    world = world_for(seed, num_entities)
    return world, sample_task(world, random.Random(seed), num_entities, num_labels=num_labels)


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
    return num_right, len(task.labels) * len(task.entities)
