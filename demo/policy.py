"""The protocol the demo model learns, written as a program: the next turn from the conversation.

`next_turn(messages)` reads only what an agent sees (its system prompt, task and tool
results) and returns the assistant turn the training conversations contain at that
point. It is the reference the model is trained to imitate: a test checks that every
generated conversation follows it, and `PolicyChatModel` (a `ChatModel` test double)
runs it through the real swarm, browser and fixture web, so the demo's plumbing is
tested apart from how well a given checkpoint learned it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from demo.tasks import table_row, table_text
from demo.trajectories import (
    ORCHESTRATOR_PROMPT, SINGLE_PROMPT, SUBAGENT_NAME, SUBAGENT_PROMPT, Message, not_found_row,
)  # fmt: skip
from swarm.messages import Message as SwarmMessage
from swarm.messages import ToolCall, ToolSpec, Usage
from swarm.model import CallContext, ModelResponse

_PROMPT = re.compile(r"For each of these \d+ (?P<what>\w+), find (?P<a>.+?) and (?P<b>.+?): (?P<names>.+)\. Answer with a table\.")
_KIND = {"cities": "city", "companies": "company", "people": "person"}


def _call(name: str, index: int, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"functions.{name}:{index}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}  # fmt: skip


def _calls(*calls: dict[str, Any]) -> Message:
    return {"role": "assistant", "content": "", "tool_calls": list(calls)}


def _row(number: int, name: str, facts: str, labels: Sequence[str]) -> str:
    values = dict(line.split(": ", 1) for line in facts.splitlines()[1:] if ": " in line)
    return table_row(number, name, [(label, values.get(label, "?")) for label in labels])


def next_turn(messages: Sequence[Message]) -> Message:
    system, task = messages[0]["content"], messages[1]["content"]
    turns = [m for m in messages if m["role"] == "assistant"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if system == SUBAGENT_PROMPT:
        head, labels = task.split(": ", 1)
        number, name = head.split(" ", 1)
        if results and results[-1].startswith("no results for "):  # a name the orchestrator mis-copied
            return {"role": "assistant", "content": not_found_row(int(number), name, labels.split(", "))}
        return _lookup_turn(name, len(turns), results) or {"role": "assistant", "content": _row(int(number), name, results[-1], labels.split(", "))}
    match = _PROMPT.fullmatch(task)
    if match is None:
        return {"role": "assistant", "content": "I cannot read this task."}
    kind, labels = _KIND[match["what"]], (match["a"], match["b"])
    names = [item.split(" ", 1)[1] for item in match["names"].split(", ")]  # "1 Lope, 2 Zanra"
    if system == ORCHESTRATOR_PROMPT:
        if not turns:
            create = _call("create_subagent", 0, {"name": SUBAGENT_NAME, "system_prompt": SUBAGENT_PROMPT})
            assigns = [_call("assign_task", i, {"agent": SUBAGENT_NAME, "task": f"{i} {n}: {labels[0]}, {labels[1]}"}) for i, n in enumerate(names, start=1)]
            return _calls(create, *assigns)
        return {"role": "assistant", "content": table_text(kind, labels, list(results[1:]))}
    if system == SINGLE_PROMPT:
        if len(turns) < 2 * len(names):
            entity = names[len(turns) // 2]
            return _lookup_turn(entity, len(turns) % 2, results[-1:]) or {}
        rows = [_row(i, name, page, labels) for i, (name, page) in enumerate(zip(names, results[1::2], strict=True), start=1)]
        return {"role": "assistant", "content": table_text(kind, labels, rows)}
    return {"role": "assistant", "content": "I cannot read this task."}


def _lookup_turn(name: str, step: int, results: Sequence[str]) -> Message | None:
    """Step 0: search for the name; step 1: open the URL the search gave; else None."""
    if step == 0:
        return _calls(_call("web_search", 0, {"query": name}))
    if step == 1:
        return _calls(_call("browser_navigate", 0, {"url": results[-1].split(": ", 1)[-1]}))
    return None


class PolicyChatModel:
    """A `ChatModel` that answers with `next_turn` (a test double for the trained model)."""

    name = "demo-policy"

    async def complete(self, messages: Sequence[SwarmMessage], tools: Sequence[ToolSpec], context: CallContext) -> ModelResponse:
        turn = next_turn([_as_dict(m) for m in messages])
        calls = tuple(ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"]) for c in turn.get("tool_calls", []))
        message = SwarmMessage(role="assistant", content=turn.get("content") or None, tool_calls=calls)
        return ModelResponse(message=message, usage=Usage(), model=self.name, finish_reason="tool_calls" if calls else "stop")

    async def aclose(self) -> None:
        pass


def _as_dict(message: SwarmMessage) -> Message:
    return {"role": message.role, "content": message.content or ""}
