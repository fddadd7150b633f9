"""Shared fixtures for the demo tests: the anyio backend, a small tokenizer built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.vocab import build_tokenizer
from model_runtime.tokenizer import KimiTokenizer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path, num_conversations=60)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> KimiTokenizer:
    return KimiTokenizer.from_dir(tokenizer_dir)
