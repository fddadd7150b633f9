"""`init-tiny`: a tiny random Kimi-format checkpoint with its tokenizer, for tests,
demos and a first run without downloading anything.

The weights and config come from `model_runtime.testing` (the real on-disk layout,
optionally INT4 routed experts); this adds `tiktoken.model` and
`tokenizer_config.json` with the special tokens, the vocabulary sized to the config.
A random model writes gibberish; it exercises the plumbing, nothing more.
"""

from __future__ import annotations

from pathlib import Path

from model_runtime.tiny_tokenizer import KIMI_SPECIAL_OFFSETS, write_tiny_tokenizer
from model_runtime.tokenizer import NUM_RESERVED_SPECIAL_TOKENS

TINY_VOCAB_SIZE = 1024


def init_tiny(directory: str | Path, *, int4: bool = False, seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE, **config_overrides: object) -> Path:
    """Writes the checkpoint into `directory` (created if needed) and returns its path."""
    from model_runtime.testing import write_tiny_checkpoint  # imports torch

    num_base = vocab_size - NUM_RESERVED_SPECIAL_TOKENS
    path = Path(directory)
    write_tiny_checkpoint(
        path,
        seed=seed,
        int4=int4,
        vocab_size=vocab_size,
        bos_token_id=num_base + KIMI_SPECIAL_OFFSETS["[BOS]"],
        eos_token_id=num_base + KIMI_SPECIAL_OFFSETS["[EOS]"],
        **config_overrides,
    )
    write_tiny_tokenizer(path, vocab_size)
    return path
