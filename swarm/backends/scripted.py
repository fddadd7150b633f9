"""`scripted:<file>`: a deterministic replay backend. A TEST DOUBLE, not a model.

It exists to exercise the orchestration (tools, limits, traces, the CLI) without a model.
The script is JSON; each agent replays its own list of turns, choosing the turn by how
many assistant messages its conversation already holds, so parallel agents replay the
same way whatever the interleaving:

    {
      "orchestrator": [turn, ...],             # the root agent (both modes)
      "subagents": {"NAME": [turn, ...]},      # per sub-agent name
      "default_subagent": [turn, ...]          # any other sub-agent
    }
    turn = {"content": "...", "tool_calls": [{"name": "...", "arguments": {...}}],
            "delay_s": 0.0, "error": "..."}    # error: fail this call (not retried)

Placeholders in content and argument strings: `{task}` (the agent's first user message),
`{last_result}` (the last tool result), `{results}` (all tool results of the previous
turn, one per line).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm.errors import ModelRequestError, ModelSpecError
from swarm.messages import Message, ToolCall, ToolSpec, Usage, kimi_tool_call_id
from swarm.model import CallContext, ModelResponse


class ScriptedCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptedTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str | None = None
    tool_calls: list[ScriptedCall] = Field(default_factory=list)
    delay_s: float = 0.0
    error: str | None = None


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orchestrator: list[ScriptedTurn] = Field(default_factory=list)
    subagents: dict[str, list[ScriptedTurn]] = Field(default_factory=dict)
    default_subagent: list[ScriptedTurn] = Field(default_factory=list)


def load_script(path: str | Path) -> Script:
    path = Path(path)
    try:
        return Script.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelSpecError(f"scripted: no such script file {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"scripted: cannot read script {path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelSpecError(f"scripted: {path}: {where}: {first['msg']}") from None


def _fill(value: Any, slots: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in slots.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, slots) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, slots) for v in value]
    return value


def _slots(messages: Sequence[Message]) -> dict[str, str]:
    task = next((m.content or "" for m in messages if m.role == "user"), "")
    results: list[str] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message.content or "")
    results.reverse()
    return {"task": task, "last_result": results[-1] if results else "", "results": "\n".join(results)}


class ScriptedChatModel:
    """Replays a `Script`; usage is counted as one token per four characters."""

    def __init__(self, script: Script, *, name: str = "scripted") -> None:
        self.script = script
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        return None

    def _turns(self, context: CallContext) -> list[ScriptedTurn]:
        if context.role == "orchestrator":
            return self.script.orchestrator
        return self.script.subagents.get(context.agent_name, self.script.default_subagent)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext
    ) -> ModelResponse:
        turns = self._turns(context)
        index = sum(1 for m in messages if m.role == "assistant")
        if index >= len(turns):
            raise ModelRequestError(
                f"script has no turn {index + 1} for {context.role} {context.agent_name!r} ({len(turns)} scripted)"
            )
        turn = turns[index]
        if turn.delay_s:
            await anyio.sleep(turn.delay_s)
        if turn.error:
            raise ModelRequestError(turn.error)
        slots = _slots(messages)
        content = _fill(turn.content, slots) if turn.content is not None else None
        calls = tuple(
            ToolCall(id=kimi_tool_call_id(c.name, i), name=c.name, arguments=json.dumps(_fill(c.arguments, slots)))
            for i, c in enumerate(turn.tool_calls)
        )
        if content and context.on_text is not None:
            context.on_text(content)
        prompt_chars = sum(len(m.content or "") for m in messages)
        output_chars = len(content or "") + sum(len(c.arguments) for c in calls)
        return ModelResponse(
            message=Message(role="assistant", content=content, tool_calls=calls),
            usage=Usage(input_tokens=prompt_chars // 4 + 1, output_tokens=output_chars // 4 + 1),
            model=self._name,
            finish_reason="tool_calls" if calls else "stop",
            latency_s=turn.delay_s,
        )
