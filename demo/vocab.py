"""The demo model's tokenizer: a small tiktoken BPE learned from the demo's own conversations.

Kimi's layout is kept: `tiktoken.model` (the 256 bytes, then merges), Kimi's split
pattern, and 256 reserved special slots after the base vocabulary with Kimi's chat
tokens at Kimi's offsets (`model_runtime.tiny_tokenizer.KIMI_SPECIAL_OFFSETS`), so
`KimiTokenizer.from_dir` reads it unchanged. Merges never join digits: every number is
one token per digit, the easiest form for a small model to copy; names come out as a
few syllable tokens. The chat template ships in `tokenizer_config.json`.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections import Counter
from pathlib import Path

import regex

from demo.trajectories import chat_template, sample_conversation
from model_runtime.tiny_tokenizer import KIMI_SPECIAL_OFFSETS, learn_merges
from model_runtime.tokenizer import KIMI_PAT_STR, NUM_RESERVED_SPECIAL_TOKENS, KimiTokenizer

DEFAULT_NUM_MERGES = 400
_SPECIAL = re.compile("|".join(re.escape(name) for name in KIMI_SPECIAL_OFFSETS))
_DIGITS = set(b"0123456789")


def corpus(num_conversations: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(sample_conversation(rng).render() for _ in range(num_conversations))


def train_merges(text: str, num_merges: int) -> dict[bytes, int]:
    """Byte-level BPE ranks over `text` split as the tokenizer will split it."""
    pattern = regex.compile(KIMI_PAT_STR, flags=regex.V1)  # V1: the `&&` set operations
    pieces: Counter[str] = Counter()
    for chunk in _SPECIAL.split(text):
        pieces.update(pattern.findall(chunk))
    words = {tuple(bytes([b]) for b in piece.encode()): count for piece, count in pieces.items()}
    return learn_merges(words, num_merges, allow=lambda left, right: not _DIGITS & set(left + right))


def write_tokenizer(directory: str | Path, ranks: dict[bytes, int]) -> KimiTokenizer:
    """Writes `tiktoken.model` and `tokenizer_config.json` (with the chat template)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    (root / "tiktoken.model").write_text("\n".join(lines) + "\n", encoding="ascii")
    num_base = len(ranks)
    decoder = {
        str(num_base + offset): {"content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for name, offset in KIMI_SPECIAL_OFFSETS.items()
    }
    config = {
        "tokenizer_class": "TikTokenTokenizer", "bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[EOS]",
        "model_max_length": 4096, "added_tokens_decoder": decoder, "chat_template": chat_template(),
    }  # fmt: skip
    (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return KimiTokenizer.from_dir(root)


def vocab_size(ranks: dict[bytes, int]) -> int:
    return len(ranks) + NUM_RESERVED_SPECIAL_TOKENS


def build_tokenizer(directory: str | Path, *, num_conversations: int = 400, num_merges: int = DEFAULT_NUM_MERGES, seed: int = 0) -> KimiTokenizer:
    return write_tokenizer(directory, train_merges(corpus(num_conversations, seed), num_merges))
