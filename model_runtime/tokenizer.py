"""Kimi's tokenizer: tiktoken BPE from the checkpoint's `tiktoken.model`, Kimi's split
pattern, and 256 reserved special-token slots after the base vocabulary, named from
`tokenizer_config.json`'s `added_tokens_decoder` (unnamed slots are
`<|reserved_token_ID|>`). tiktoken does the BPE; this module only wires it up.
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterable
from pathlib import Path

import tiktoken

from model_runtime.engine.errors import TokenizerError

NUM_RESERVED_SPECIAL_TOKENS = 256

# Kimi's pre-tokenizer split (tokenization_kimi.py): Han runs apart, then
# cased-word pieces with English contractions, digits in threes, punctuation, spaces.
KIMI_PAT_STR = "|".join(
    [
        r"""[\p{Han}]+""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def read_tiktoken_bpe(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise TokenizerError(f"{path}:{line_no}: expected 'BASE64 RANK', got {line[:40]!r}") from exc
    return ranks


class KimiTokenizer:
    """Encodes text (special tokens allowed) and decodes ids, incrementally when asked."""

    def __init__(self, mergeable_ranks: dict[bytes, int], special_names: dict[int, str], *, bos: str | None = "[BOS]", eos: str | None = "[EOS]", chat_template: str | None = None) -> None:
        num_base = len(mergeable_ranks)
        special = {special_names.get(i, f"<|reserved_token_{i}|>"): i for i in range(num_base, num_base + NUM_RESERVED_SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding(name="kimi", pat_str=KIMI_PAT_STR, mergeable_ranks=mergeable_ranks, special_tokens=special)
        self.special_tokens = special
        self.chat_template = chat_template
        self.bos_token_id = special.get(bos) if bos else None
        self.eos_token_id = special.get(eos) if eos else None

    @classmethod
    def from_dir(cls, path: str | Path) -> KimiTokenizer:
        root = Path(path)
        model_file, config_file = root / "tiktoken.model", root / "tokenizer_config.json"
        if not model_file.is_file():
            raise TokenizerError(f"{root} has no tiktoken.model (run `swarm model init-tiny` for a test checkpoint)")
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        names = {int(i): t["content"] for i, t in config.get("added_tokens_decoder", {}).items()}
        template = config.get("chat_template")
        if (root / "chat_template.jinja").is_file():
            template = (root / "chat_template.jinja").read_text()
        return cls(read_tiktoken_bpe(model_file), names, bos=_token_name(config.get("bos_token")), eos=_token_name(config.get("eos_token")), chat_template=template if isinstance(template, str) else None)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def token_id(self, name: str) -> int | None:
        return self.special_tokens.get(name)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, token_ids: Iterable[int]) -> str:
        return self.encoding.decode_bytes(list(token_ids)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)


class IncrementalDecoder:
    """Text deltas as tokens arrive; holds back bytes of a character split across tokens."""

    def __init__(self, tokenizer: KimiTokenizer) -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def _token_name(value: object) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
