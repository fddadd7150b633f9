"""`model init-tiny` through the typer app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from model_runtime.cli import model_app


def test_init_tiny_writes_checkpoint_and_tokenizer(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    result = CliRunner().invoke(model_app, ["init-tiny", str(target), "--int4"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "tiktoken.model", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    again = CliRunner().invoke(model_app, ["init-tiny", str(target)])
    assert again.exit_code == 2
