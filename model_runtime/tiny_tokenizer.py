"""A tiny Kimi-format tokenizer for test checkpoints: `tiktoken.model` plus
`tokenizer_config.json` with Kimi's special tokens in the 256 reserved slots.

The base vocabulary is the 256 bytes plus BPE merges learned, deterministically,
from a small built-in English text, so test prompts encode to a handful of tokens
the way a real vocabulary would. Not a tokenizer for real use.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from model_runtime.tokenizer import NUM_RESERVED_SPECIAL_TOKENS

# Kimi's special tokens, as offsets from the first reserved slot (163584 in Kimi K2).
KIMI_SPECIAL_OFFSETS = {
    "[BOS]": 0,
    "[EOS]": 1,
    "<|im_end|>": 2,
    "<|im_user|>": 3,
    "<|im_assistant|>": 4,
    "[EOT]": 5,
    "<|im_system|>": 10,
    "<|tool_calls_section_begin|>": 11,
    "<|tool_calls_section_end|>": 12,
    "<|tool_call_begin|>": 13,
    "<|tool_call_argument_begin|>": 14,
    "<|tool_call_end|>": 15,
    "<|im_middle|>": 17,
    "<think>": 18,
    "</think>": 19,
}

_CORPUS = """
You are a helpful assistant. The user asks a question and the assistant answers it.
The swarm runs many agents in parallel; each agent calls tools and returns a final answer.
Search the web, read the page, write the code, run the tests, and report the result.
functions.search functions.python functions.browser arguments query url code result
{"query": "weather in Paris"} {"code": "print(1 + 1)"} {"url": "https://example.com"}
Hello world! How are you today? I am fine, thank you. What is the capital of France?
The quick brown fox jumps over the lazy dog. 0123456789 one two three four five six.
"""


def train_bpe(text: str, num_merges: int) -> dict[bytes, int]:
    """Byte-level BPE ranks: the 256 bytes, then merges by pair frequency."""
    words = Counter(tuple(bytes([b]) for b in w.encode()) for w in re.findall(r" ?\w+| ?[^\s\w]+|\s+", text))
    return learn_merges(words, num_merges)


def learn_merges(
    words: Mapping[tuple[bytes, ...], int],
    num_merges: int,
    *,
    allow: Callable[[bytes, bytes], bool] | None = None,
) -> dict[bytes, int]:
    """BPE ranks from pre-split words (byte tuples with counts): the 256 bytes, then up to
    `num_merges` merges of the most frequent pair that `allow` accepts (ties by the pair)."""
    ranks = {bytes([i]): i for i in range(256)}
    for _ in range(num_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                if allow is None or allow(*pair):
                    pairs[pair] += count
        if not pairs:
            break
        (left, right), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        ranks[left + right] = len(ranks)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
                    out.append(left + right)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return ranks


def write_tiny_tokenizer(directory: str | Path, vocab_size: int) -> None:
    """Writes `tiktoken.model` and `tokenizer_config.json` for a model of `vocab_size`
    (base tokens = vocab_size - 256 reserved special slots)."""
    num_base = vocab_size - NUM_RESERVED_SPECIAL_TOKENS
    if num_base < 256:
        raise ValueError(f"vocab_size must be at least {256 + NUM_RESERVED_SPECIAL_TOKENS}, got {vocab_size}")
    ranks = train_bpe(_CORPUS, num_base - 256)
    # The corpus runs out of merges: pad with pronounceable pseudo-words, so a random
    # model's output reads as words rather than control bytes.
    filler = 0
    while len(ranks) < num_base:
        ranks.setdefault(_pseudo_word(filler).encode(), len(ranks))
        filler += 1
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    (root / "tiktoken.model").write_text("\n".join(lines) + "\n", encoding="ascii")
    decoder = {
        str(num_base + offset): {"content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for name, offset in KIMI_SPECIAL_OFFSETS.items()
    }
    config = {
        "tokenizer_class": "TikTokenTokenizer",
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "pad_token": "[EOS]",
        "model_max_length": 1048576,
        "added_tokens_decoder": decoder,
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _pseudo_word(n: int) -> str:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = []
    while True:
        n, i = divmod(n, len(consonants) * len(vowels))
        syllables.append(consonants[i // len(vowels)] + vowels[i % len(vowels)])
        if n == 0:
            return " " + "".join(syllables)
        n -= 1
