"""Kimi's chat format, the tool-call parser (whole and streamed) and the tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_runtime.chat_format import compiled_template, render_chat
from model_runtime.tiny_tokenizer import write_tiny_tokenizer
from model_runtime.tokenizer import IncrementalDecoder, KimiTokenizer
from model_runtime.tool_parser import StreamingToolParser, parse_completion

TOOLS = [{"type": "function", "function": {"name": "search", "description": "web", "parameters": {"type": "object"}}}]


def test_turn_format_with_tools_calls_and_results() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "functions.search:0", "type": "function", "function": {"name": "search", "arguments": '{"q": "paris"}'}}]},
        {"role": "tool", "tool_call_id": "functions.search:0", "content": "sunny"},
    ]
    text = render_chat(messages, TOOLS, thinking=False)
    assert text.startswith('<|im_system|>tool_declare<|im_middle|>[{"type": "function"')
    assert "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Weather?<|im_end|>" in text
    assert (
        "<|im_assistant|>assistant<|im_middle|>Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0"
        '<|tool_call_argument_begin|>{"q": "paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
    ) in text
    assert "<|im_system|>tool<|im_middle|>## Return of functions.search:0\nsunny<|im_end|>" in text
    assert text.endswith("<|im_assistant|>assistant<|im_middle|><think></think>")
    assert render_chat(messages[:2], thinking=True).endswith("<|im_middle|><think>")


def test_checkpoint_template_wins() -> None:
    template = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    assert render_chat([{"role": "user", "content": "hi"}], template=template) == "[user:hi]>"


def test_parse_tool_calls_with_kimi_ids() -> None:
    text = (
        "Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>"
        '{"q": "a"}<|tool_call_end|><|tool_call_begin|>functions.python:1<|tool_call_argument_begin|>{"code": "1"}'
        "<|tool_call_end|><|tool_calls_section_end|>"
    )
    parsed = parse_completion(text)
    assert parsed.content == "Checking." and not parsed.errors
    assert [(c.id, c.name, c.arguments) for c in parsed.tool_calls] == [
        ("functions.search:0", "search", '{"q": "a"}'),
        ("functions.python:1", "python", '{"code": "1"}'),
    ]


@pytest.mark.parametrize(
    "section, error",
    [
        ("<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}<|tool_call_end|>", "not closed"),
        ("<|tool_call_begin|>functions.f:0{}<|tool_call_end|><|tool_calls_section_end|>", "no argument marker"),
        ("<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{bad<|tool_call_end|><|tool_calls_section_end|>", "not valid JSON"),
        ("<|tool_call_begin|>!!<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>", "bad call id"),
    ],
)
def test_malformed_sections_are_reported_not_raised(section: str, error: str) -> None:
    parsed = parse_completion("x<|tool_calls_section_begin|>" + section)
    assert parsed.content == "x" and any(error in e for e in parsed.errors)


def test_reasoning_is_split_from_content() -> None:
    parsed = parse_completion("<think>plan it</think>The answer.")
    assert parsed.reasoning == "plan it" and parsed.content == "The answer."


def test_streaming_parser_never_shows_section_text() -> None:
    text = 'Hi there<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"a": 1}<|tool_call_end|><|tool_calls_section_end|>'
    parser = StreamingToolParser()
    shown = "".join(parser.feed(text[i : i + 3]) for i in range(0, len(text), 3))
    rest, parsed = parser.finish()
    assert shown + rest == "Hi there"
    assert parsed.tool_calls[0].id == "functions.f:0"
    plain = StreamingToolParser()
    assert plain.feed("a <|tool") == "a " and plain.finish()[0] == "<|tool"


def test_tiny_tokenizer_round_trips_with_special_tokens(tmp_path: Path) -> None:
    write_tiny_tokenizer(tmp_path, vocab_size=1024)
    tok = KimiTokenizer.from_dir(tmp_path)
    assert tok.vocab_size == 1024
    text = "<|im_user|>user<|im_middle|>Hello wörld 世界 it's 12345!<|im_end|>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.token_id("<|im_end|>") in ids and tok.eos_token_id == tok.token_id("[EOS]")
    assert ids.count(tok.token_id("<|im_middle|>")) == 1
    decoder = IncrementalDecoder(tok)
    assert "".join(decoder.push(i) for i in tok.encode("héllo 世界")) + decoder.flush() == "héllo 世界"


def test_template_errors_surface_as_value_errors() -> None:
    template = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be the user') }}{% endif %}"
    with pytest.raises(ValueError, match="first message must be the user"):
        render_chat([{"role": "system", "content": "x"}], template=template)


def test_a_template_is_compiled_once_and_each_template_renders_as_itself() -> None:
    first, second = "{% for m in messages %}[{{ m.content }}]{% endfor %}", "{% for m in messages %}<{{ m.content }}>{% endfor %}"
    assert compiled_template(first) is compiled_template(first)
    messages = [{"role": "user", "content": "hi"}]
    assert render_chat(messages, template=first, add_generation_prompt=False) == "[hi]"
    assert render_chat(messages, template=second, add_generation_prompt=False) == "<hi>"
