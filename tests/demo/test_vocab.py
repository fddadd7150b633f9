"""The demo tokenizer: Kimi's layout, round trips, numbers one digit per token."""

from __future__ import annotations

from demo.trajectories import swarm_run
from model_runtime.tiny_tokenizer import KIMI_SPECIAL_OFFSETS
from model_runtime.tokenizer import KimiTokenizer


def test_round_trips_conversations_of_unseen_worlds(tokenizer: KimiTokenizer) -> None:
    for conversation in swarm_run(1_000_000_123, 4)[1]:
        text = conversation.render()
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_sit_at_kimis_offsets(tokenizer: KimiTokenizer) -> None:
    num_base = tokenizer.vocab_size - 256
    for name, offset in KIMI_SPECIAL_OFFSETS.items():
        assert tokenizer.encode(name) == [num_base + offset]


def test_numbers_are_one_token_per_digit(tokenizer: KimiTokenizer) -> None:
    assert [tokenizer.decode([i]) for i in tokenizer.encode("Population: 316000")][-6:] == list("316000")


def test_names_are_a_few_tokens(tokenizer: KimiTokenizer) -> None:
    task, _ = swarm_run(1_000_000_321, 8)
    for entity in task.entities:
        assert len(tokenizer.encode(entity.name)) <= len(entity.name) // 2 + 1


def test_chat_template_ships_in_the_tokenizer_config(tokenizer: KimiTokenizer) -> None:
    assert tokenizer.chat_template is not None and "tool_declare" in tokenizer.chat_template
