"""Training conversations for the demo model, from seeded fixture worlds.

Every agent of a run is one conversation, written the way the swarm writes it
(swarm/agent.py's messages, backends/local.py's `to_kimi_dict`) and rendered by the
same `render_chat` with the demo's chat template (chat_template.jinja):

    orchestrator  system, user prompt; one turn that calls create_subagent and one
                  assign_task per entity (they run in parallel); the N answers; the table
    subagent      system (the orchestrator's), its task; web_search; browser_navigate;
                  the values (or, when the search finds nothing, its row "not found")
    single        system, user prompt; web_search and browser_navigate per entity, one
                  after another; the table

Tool results are what the demo kit (demo/web_kit.py) returns for those pages; the
coordinator's own results (create_subagent's confirmation) are its exact strings.
`encode` turns a conversation into token ids and a mask of the assistant's tokens
(what the model must learn to write).
"""

from __future__ import annotations

import json
import random

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from demo.tasks import WideTask, seeded_task, table_row
from demo.web_kit import facts_text, search_text
from model_runtime.chat_format import render_chat
from tools.fixture_web.world import Entity, World

ORCHESTRATOR_PROMPT = "You lead a swarm. Give each entity to a finder, then answer with a table."
SINGLE_PROMPT = "Look up each entity in turn, then answer with a table."
SUBAGENT_NAME = "finder"
SUBAGENT_PROMPT = "Look up the entity and answer with the values."

KIT_TOOLS = ("web_search", "browser_navigate")
SWARM_TOOLS = ("create_subagent", "assign_task")
CREATED = "Sub-agent {name!r} created. Use assign_task(agent={name!r}, task=...) to run it."  # coordinator.py

Message = dict[str, Any]

NOT_FOUND = "not found"
"""A sub-agent's value for an entity its search did not find (a name the orchestrator mis-copied)."""

TRAIN_SEED_LIMIT = 1_000_000_000
"""Training worlds use seeds below this; evaluation worlds use seeds at or above it."""


@cache
def chat_template() -> str:
    return (Path(__file__).parent / "chat_template.jinja").read_text()


def tool_dicts(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Tools as `ToolSpec.to_openai()` passes them (the template reads only the names)."""
    return [{"type": "function", "function": {"name": name, "description": "", "parameters": {}}} for name in names]


@dataclass
class Conversation:
    role: str  # orchestrator | subagent | single
    tools: tuple[str, ...]
    messages: list[Message] = field(default_factory=list)

    def render(self, *, add_generation_prompt: bool = False) -> str:
        return render_chat(self.messages, tool_dicts(self.tools), template=chat_template(), add_generation_prompt=add_generation_prompt)

    def segments(self) -> list[tuple[str, bool]]:
        """The rendered text in pieces, each marked True where the assistant wrote it."""
        pieces = [(render_chat([], tool_dicts(self.tools), template=chat_template(), add_generation_prompt=False), False)]
        head = render_chat([], None, template=chat_template(), add_generation_prompt=True)  # "<|im_assistant|>assistant<|im_middle|>"
        for message in self.messages:
            text = render_chat([message], None, template=chat_template(), add_generation_prompt=False)
            if message["role"] == "assistant":
                pieces += [(head, False), (text.removeprefix(head), True)]
            else:
                pieces.append((text, False))
        return pieces


def _call(name: str, index: int, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"functions.{name}:{index}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}  # fmt: skip


def _calls(*calls: dict[str, Any]) -> Message:
    return {"role": "assistant", "content": "", "tool_calls": list(calls)}


def _result(call: dict[str, Any], content: str) -> Message:
    return {"role": "tool", "content": content, "tool_call_id": call["id"]}


def _lookup(world: World, entity: Entity) -> list[Message]:
    """One entity's search and page visit: four messages."""
    search = _call("web_search", 0, {"query": entity.name})
    hits = search_text(world, entity.name)
    path = hits.split(": ", 1)[1] if ": /" in hits else entity.path
    visit = _call("browser_navigate", 0, {"url": path})
    page = next((e for e in world.entities if e.path == path), entity)
    return [_calls(search), _result(search, hits), _calls(visit), _result(visit, facts_text(page))]


def subagent(world: World, task: WideTask, entity: Entity) -> Conversation:
    conversation = Conversation("subagent", KIT_TOOLS, [
        {"role": "system", "content": SUBAGENT_PROMPT},
        {"role": "user", "content": task.subtask(entity)},
    ])  # fmt: skip
    conversation.messages += _lookup(world, entity)
    conversation.messages.append({"role": "assistant", "content": task.answer(entity)})
    return conversation


def not_found_row(number: int, name: str, labels: Sequence[str]) -> str:
    """A finder's answer for a name its search did not find (demo/policy.py writes it too)."""
    return table_row(number, name, [(label, NOT_FOUND) for label in labels])


def misspelling(world: World, task: WideTask, entity: Entity, rng: random.Random) -> str | None:
    """The entity's name as the orchestrator mis-copies it (a prefix of it, then the rest of
    another name in the task: "Fengalgal" -> "Fenanda"), one the site's search does not
    find; None when no such name turns up in a few draws."""
    others = [e.name for e in task.entities if e is not entity] or [e.name for e in world.entities if e is not entity]
    for _ in range(8):
        other = rng.choice(others)
        cut, rest = rng.randint(1, max(1, len(entity.name) - 1)), rng.randint(1, max(1, len(other) - 1))
        name = (entity.name[:cut] + other[rest:]).strip()
        if name and name.lower() != entity.name.lower() and search_text(world, name).startswith("no results"):
            return name
    return None


def subagent_not_found(world: World, task: WideTask, entity: Entity, name: str) -> Conversation:
    """A sub-agent given `name` for `entity` (mis-copied): the search finds nothing, so its
    row says so and keeps its number (the orchestrator's table stays in step)."""
    number = task.number(entity)
    search = _call("web_search", 0, {"query": name})
    return Conversation("subagent", KIT_TOOLS, [
        {"role": "system", "content": SUBAGENT_PROMPT},
        {"role": "user", "content": task.subtask(entity, name)},
        _calls(search), _result(search, search_text(world, name)),
        {"role": "assistant", "content": not_found_row(number, name, task.labels)},
    ])  # fmt: skip


def orchestrator(task: WideTask, *, failed: frozenset[int] = frozenset()) -> Conversation:
    """`failed`: numbers of entities whose finder found nothing (its row says "not found";
    the table copies it as it came)."""
    create = _call("create_subagent", 0, {"name": SUBAGENT_NAME, "system_prompt": SUBAGENT_PROMPT})
    assigns = [_call("assign_task", i + 1, {"agent": SUBAGENT_NAME, "task": task.subtask(e)}) for i, e in enumerate(task.entities)]
    answers = [not_found_row(i, e.name, task.labels) if i in failed else task.answer(e) for i, e in enumerate(task.entities, start=1)]
    messages = [
        {"role": "system", "content": ORCHESTRATOR_PROMPT},
        {"role": "user", "content": task.prompt()},
        _calls(create, *assigns),
        _result(create, CREATED.format(name=SUBAGENT_NAME)),
        *(_result(call, answer) for call, answer in zip(assigns, answers, strict=True)),
        {"role": "assistant", "content": task.table(answers)},
    ]
    return Conversation("orchestrator", KIT_TOOLS + SWARM_TOOLS, messages)


def single(world: World, task: WideTask) -> Conversation:
    conversation = Conversation("single", KIT_TOOLS, [
        {"role": "system", "content": SINGLE_PROMPT},
        {"role": "user", "content": task.prompt()},
    ])  # fmt: skip
    for entity in task.entities:
        conversation.messages += _lookup(world, entity)
    conversation.messages.append({"role": "assistant", "content": task.table()})
    return conversation


def swarm_run(seed: int, num_entities: int) -> tuple[WideTask, list[Conversation]]:
    """Every conversation of one swarm run on world `seed`: the orchestrator's, then each sub-agent's."""
    world, task = seeded_task(seed, num_entities)
    return task, [orchestrator(task)] + [subagent(world, task, e) for e in task.entities]


def single_run(seed: int, num_entities: int) -> tuple[WideTask, Conversation]:
    world, task = seeded_task(seed, num_entities)
    return task, single(world, task)


def sample_conversation(rng: random.Random, *, max_single_entities: int = 8, mix: tuple[float, float] = (0.6, 0.3),
                        wide_power: float = 2.0, miss: float = 0.0) -> Conversation:
    """One training conversation from a fresh world (seed drawn from `rng`).

    Mixture, by conversation (`mix`: the sub-agents' and the orchestrators' shares):
    sub-agents (the lookups, short; one of a task of 1 to 16 entities, so its number in the
    task runs to 16) 60%; orchestrators 30%, with N = 2 + 15 r^`wide_power` entities (r
    uniform in [0, 1): the default 2 draws small N more often, long tables being mostly
    more of the same copying; 1 draws every N alike); single agents
    the rest, 2 to `max_single_entities`. A curriculum starts with sub-agents only: short
    conversations in which the model first learns to copy. `miss`: the share of sub-agents
    given a mis-copied name (`subagent_not_found`) and of orchestrators one of whose
    finders found nothing.
    """
    seed = rng.randrange(TRAIN_SEED_LIMIT)
    draw = rng.random()
    if draw < mix[0]:
        world, task = seeded_task(seed, 1 + seed % 16)
        entity = task.entities[rng.randrange(len(task.entities))]
        name = misspelling(world, task, entity, rng) if miss and rng.random() < miss else None
        return subagent_not_found(world, task, entity, name) if name else subagent(world, task, entity)
    if draw < mix[0] + mix[1]:
        world, task = seeded_task(seed, 2 + int(15 * rng.random() ** wide_power))
        failed = frozenset({rng.randint(1, len(task.entities))}) if miss and rng.random() < miss else frozenset()
        return orchestrator(task, failed=failed)
    return single_run(seed, rng.randint(2, max_single_entities))[1]


def encode(tokenizer: Any, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids of the segments, and which ids the assistant wrote (a `KimiTokenizer`)."""
    ids: list[int] = []
    is_assistant: list[bool] = []
    for text, flag in segments:
        piece = tokenizer.encode(text)
        ids += piece
        is_assistant += [flag] * len(piece)
    return ids, is_assistant
