"""Kimi's chat format: messages (OpenAI-style dicts) to the prompt text.

The checkpoint's own jinja2 template wins when it ships one (`chat_template` in
`tokenizer_config.json` or `chat_template.jinja`); otherwise `render_kimi` writes
Kimi's turn format: `<|im_ROLE|>NAME<|im_middle|>CONTENT<|im_end|>`, tools declared
in a `tool_declare` system turn, tool calls as a section after the assistant's text,
tool results as `## Return of ID` turns, and `<think>` / `<think></think>` after the
generation prompt for thinking / instant mode. Past reasoning is not replayed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.sandbox

Message = Mapping[str, Any]


def render_chat(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None, *, template: str | None = None, add_generation_prompt: bool = True, thinking: bool | None = None) -> str:
    if template:
        extra = {} if thinking is None else {"thinking": thinking}
        return compiled_template(template).render(messages=list(messages), tools=list(tools) if tools else None, add_generation_prompt=add_generation_prompt, **extra)
    return render_kimi(messages, tools, add_generation_prompt=add_generation_prompt, thinking=thinking)


@lru_cache(maxsize=16)
def compiled_template(template: str) -> jinja2.Template:
    """A checkpoint's chat template, compiled once (compiling costs ~3 ms, more than
    rendering: every model call renders its prompt) in a sandboxed, immutable environment."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = _raise_template_error
    return env.from_string(template)


def render_kimi(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None, *, add_generation_prompt: bool = True, thinking: bool | None = None) -> str:
    parts: list[str] = []
    if tools:
        parts.append(f"<|im_system|>tool_declare<|im_middle|>{json.dumps(list(tools), ensure_ascii=False)}<|im_end|>")
    for message in messages:
        parts.append(_turn(message))
    if add_generation_prompt:
        parts.append("<|im_assistant|>assistant<|im_middle|>")
        if thinking is not None:
            parts.append("<think>" if thinking else "<think></think>")
    return "".join(parts)


def _turn(message: Message) -> str:
    role = message.get("role")
    content = _text(message.get("content"))
    if role == "system":
        return f"<|im_system|>{message.get('name') or 'system'}<|im_middle|>{content}<|im_end|>"
    if role == "user":
        return f"<|im_user|>{message.get('name') or 'user'}<|im_middle|>{content}<|im_end|>"
    if role == "assistant":
        return f"<|im_assistant|>assistant<|im_middle|>{content}{_tool_calls(message.get('tool_calls') or [])}<|im_end|>"
    if role == "tool":
        return f"<|im_system|>tool<|im_middle|>## Return of {message.get('tool_call_id', '')}\n{content}<|im_end|>"
    raise ValueError(f"unknown message role {role!r}")


def _tool_calls(calls: Sequence[Mapping[str, Any]]) -> str:
    if not calls:
        return ""
    parts = ["<|tool_calls_section_begin|>"]
    for index, call in enumerate(calls):
        function = call.get("function", call)
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        call_id = call.get("id") or f"functions.{function['name']}:{index}"
        parts.append(f"<|tool_call_begin|>{call_id}<|tool_call_argument_begin|>{arguments}<|tool_call_end|>")
    parts.append("<|tool_calls_section_end|>")
    return "".join(parts)


def _text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


def _raise_template_error(message: str) -> None:
    raise ValueError(f"chat template: {message}")
