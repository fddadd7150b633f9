"""The generated conversations: deterministic, in Kimi's format, parseable as the runtime parses them."""

from __future__ import annotations

import json
import random

from demo.tasks import item_accuracy, seeded_task, value_of
from demo.trajectories import (
    CREATED, NOT_FOUND, SUBAGENT_NAME, chat_template, misspelling, orchestrator, sample_conversation, single_run,
    subagent_not_found, swarm_run, tool_dicts,
)  # fmt: skip
from demo.web_kit import search_text
from model_runtime.chat_format import render_chat, render_kimi
from model_runtime.tool_parser import parse_completion


def test_same_seed_same_conversations_and_other_seeds_differ() -> None:
    first = [c.render() for c in swarm_run(7, 5)[1]]
    assert first == [c.render() for c in swarm_run(7, 5)[1]]
    assert first != [c.render() for c in swarm_run(8, 5)[1]]
    assert single_run(7, 3)[1].render() == single_run(7, 3)[1].render()


def test_swarm_run_has_an_orchestrator_and_one_subagent_per_entity() -> None:
    task, conversations = swarm_run(3, 6)
    assert [c.role for c in conversations] == ["orchestrator"] + ["subagent"] * 6
    assert len({e.name for e in task.entities}) == 6


def test_every_tool_call_turn_parses_back_with_the_runtime_parser() -> None:
    rng = random.Random(0)
    for _ in range(30):
        conversation = sample_conversation(rng)
        completions = [text for text, is_assistant in conversation.segments() if is_assistant]
        turns = [m for m in conversation.messages if m["role"] == "assistant"]
        assert len(completions) == len(turns)
        for text, turn in zip(completions, turns, strict=True):
            assert text.endswith("<|im_end|>")
            parsed = parse_completion(text.removesuffix("<|im_end|>"))
            assert parsed.errors == []
            assert parsed.content == turn["content"]
            expected = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in turn.get("tool_calls", [])]
            assert [(c.id, c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == expected


def test_template_is_kimis_format_but_declares_tools_by_name() -> None:
    conversation = swarm_run(5, 3)[1][0]
    ours = conversation.render(add_generation_prompt=True)
    kimi = render_kimi(conversation.messages, tool_dicts(conversation.tools))
    declare_end = kimi.index("<|im_end|>") + len("<|im_end|>")
    assert ours.startswith("<|im_system|>tool_declare<|im_middle|>web_search browser_navigate create_subagent assign_task<|im_end|>")
    assert ours.split("<|im_end|>", 1)[1] == kimi[declare_end:]


def test_segments_join_to_the_whole_conversation() -> None:
    for conversation in swarm_run(4, 3)[1] + [single_run(4, 3)[1]]:
        assert "".join(text for text, _ in conversation.segments()) == conversation.render()


def test_orchestrator_assigns_every_entity_in_one_turn_and_tables_the_answers() -> None:
    task, conversations = swarm_run(11, 4)
    orchestrator = conversations[0]
    calls = orchestrator.messages[2]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["create_subagent"] + ["assign_task"] * 4
    assert orchestrator.messages[3]["content"] == CREATED.format(name=SUBAGENT_NAME)
    table = orchestrator.messages[-1]["content"]
    assert item_accuracy(task, table) == (8, 8)


def test_subagent_reads_the_values_from_the_page() -> None:
    task, conversations = swarm_run(12, 3)
    for entity, conversation in zip(task.entities, conversations[1:], strict=True):
        page = conversation.messages[-2]["content"]
        for label in task.labels:
            assert f"{label}: {value_of(entity, label)}" in page
        assert conversation.messages[-1]["content"] == task.answer(entity)


def test_item_accuracy_counts_each_value() -> None:
    task, _ = swarm_run(2, 3)
    answers = [task.answer(e) for e in task.entities]
    answers[1] = f"| 2 | {task.entities[1].name} | wrong | {task.labels[1]}: also wrong |"
    assert item_accuracy(task, task.table(answers)) == (4, 6)
    assert item_accuracy(task, "no table") == (0, 6)


def test_a_misspelled_name_is_not_found_and_the_row_keeps_its_number() -> None:
    world, task = seeded_task(21, 6)
    entity = task.entities[3]
    name = misspelling(world, task, entity, random.Random(0))
    assert name and name != entity.name and name[0] == entity.name[0]
    assert search_text(world, name) == f"no results for {name!r}"
    conversation = subagent_not_found(world, task, entity, name)
    assert conversation.messages[1]["content"] == f"4 {name}: {task.labels[0]}, {task.labels[1]}"
    assert [m["role"] for m in conversation.messages[2:]] == ["assistant", "tool", "assistant"]  # no page to open
    assert conversation.messages[-1]["content"] == f"| 4 | {name} | {task.labels[0]}: {NOT_FOUND} | {task.labels[1]}: {NOT_FOUND} |"


def test_an_orchestrator_whose_finder_found_nothing_tables_that_row_as_it_came() -> None:
    _, task = seeded_task(22, 5)
    conversation = orchestrator(task, failed=frozenset({2}))
    row = conversation.messages[5]["content"]
    assert row.startswith(f"| 2 | {task.entities[1].name} |") and row.count(NOT_FOUND) == 2
    assert conversation.messages[-1]["content"].splitlines()[3] == row
    assert item_accuracy(task, conversation.messages[-1]["content"]) == (8, 10)


def test_misses_are_drawn_only_when_asked_and_the_rest_is_unchanged() -> None:
    plain = [sample_conversation(random.Random(s), mix=(0.5, 0.45)).render() for s in range(30)]
    assert plain == [sample_conversation(random.Random(s), mix=(0.5, 0.45), miss=0.0).render() for s in range(30)]
    missed = [sample_conversation(random.Random(s), mix=(0.5, 0.45), miss=1.0) for s in range(30)]
    assert all(NOT_FOUND in c.messages[-1]["content"] for c in missed if c.role != "single")
    assert all(NOT_FOUND not in text for text in plain)
