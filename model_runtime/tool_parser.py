"""Tool calls out of generated text, Kimi's format, whole or streamed.

    content <|tool_calls_section_begin|>
      <|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}<|tool_call_end|>
      ...
    <|tool_calls_section_end|>

A random or confused model writes broken sections; they are reported in `errors`,
never raised, and whatever calls are intact are kept. Text before `</think>` is the
reasoning when the model thinks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
THINK_END = "</think>"

_CALL_ID = re.compile(r"^(?:functions\.)?(?P<name>[A-Za-z0-9_\-.]+?)(?::(?P<index>\d+))?$")


@dataclass(frozen=True)
class ParsedToolCall:
    id: str  # functions.NAME:IDX, as Kimi writes it
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedCompletion:
    content: str
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    reasoning: str | None = None
    errors: list[str] = field(default_factory=list)


def parse_completion(text: str) -> ParsedCompletion:
    reasoning = None
    if THINK_END in text:
        reasoning, text = text.split(THINK_END, 1)
        reasoning = reasoning.removeprefix("<think>").strip()
    if SECTION_BEGIN not in text:
        return ParsedCompletion(content=text, reasoning=reasoning)
    content, section = text.split(SECTION_BEGIN, 1)
    errors: list[str] = []
    if SECTION_END in section:
        section, _ = section.split(SECTION_END, 1)
    else:
        errors.append("tool-calls section is not closed")
    calls = []
    for position, chunk in enumerate(section.split(CALL_BEGIN)[1:]):
        call, error = _parse_call(chunk, len(calls))
        if error:
            errors.append(f"tool call {position}: {error}")
        if call:
            calls.append(call)
    return ParsedCompletion(content=content, tool_calls=calls, reasoning=reasoning, errors=errors)


def _parse_call(chunk: str, next_index: int) -> tuple[ParsedToolCall | None, str | None]:
    if ARGUMENT_BEGIN not in chunk:
        return None, "no argument marker"
    raw_id, rest = chunk.split(ARGUMENT_BEGIN, 1)
    error = None
    if CALL_END in rest:
        arguments = rest.split(CALL_END, 1)[0].strip()
    else:
        arguments, error = rest.strip(), "call is not closed"
    match = _CALL_ID.match(raw_id.strip())
    if not match:
        return None, f"bad call id {raw_id.strip()[:60]!r}"
    name = match["name"]
    index = int(match["index"]) if match["index"] is not None else next_index
    try:
        json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        error = error or f"arguments are not valid JSON ({exc.msg})"
    return ParsedToolCall(id=f"functions.{name}:{index}", name=name, arguments=arguments or "{}"), error


class StreamingToolParser:
    """Feeds on text deltas; returns the content safe to show now. Text that might be
    the start of a tool-calls section is held back until it is known not to be.
    `complete_calls` hands out each tool call as soon as its end marker has arrived."""

    def __init__(self) -> None:
        self.text = ""
        self._num_shown = 0
        self._is_in_section = False
        self._next_call_at: int | None = None  # where the next complete call's text starts
        self._num_complete = 0

    def feed(self, delta: str) -> str:
        self.text += delta
        if self._is_in_section:
            return ""
        begin = self.text.find(SECTION_BEGIN, self._num_shown)
        if begin != -1:
            self._is_in_section = True
            return self._show(begin)
        return self._show(len(self.text) - _partial_suffix(self.text, SECTION_BEGIN))

    def complete_calls(self) -> list[ParsedToolCall]:
        """The tool calls closed since the last time, in order, each as `finish` will parse
        it (so they are the first calls of its list). It stops handing out calls for good at
        the first one that is broken, at the section's end, and inside reasoning (a section
        after `<think>` and before `</think>` is not a call)."""
        if not self._is_in_section or self._next_call_at == -1:
            return []
        if self._next_call_at is None:
            begin = self.text.find(SECTION_BEGIN)
            before = self.text[:begin]
            if "<think>" in before and THINK_END not in before:
                self._next_call_at = -1
                return []
            self._next_call_at = begin + len(SECTION_BEGIN)
        calls: list[ParsedToolCall] = []
        while (end := self.text.find(CALL_END, self._next_call_at)) != -1:
            segment = self.text[self._next_call_at : end + len(CALL_END)]
            chunks = segment.split(CALL_BEGIN)[1:]
            call, error = _parse_call(chunks[0], self._num_complete) if len(chunks) == 1 else (None, "")
            if call is None or error is not None or SECTION_END in segment:
                self._next_call_at = -1  # `finish` reports it; no later call can be trusted
                break
            calls.append(call)
            self._num_complete += 1
            self._next_call_at = end + len(CALL_END)
        return calls

    def finish(self) -> tuple[str, ParsedCompletion]:
        """The rest of the content to show, and the whole completion parsed."""
        rest = "" if self._is_in_section else self._show(len(self.text))
        return rest, parse_completion(self.text)

    def _show(self, end: int) -> str:
        shown = self.text[self._num_shown : end]
        self._num_shown = max(self._num_shown, end)
        return shown


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
