"""`quantize_checkpoint` and the `model` CLI (info, quantize)."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from typer.testing import CliRunner

from model_runtime import load_model
from model_runtime.cli import model_app
from model_runtime.quant.convert import quantize_checkpoint
from model_runtime.quant.int4 import Int4Experts, quantize_experts_int4
from model_runtime.testing import write_tiny_checkpoint
from tests.model_runtime.oracle import assert_close_to_oracle, reference_logits

IDS = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))


def test_quantized_checkpoint_matches_oracle_and_in_memory_pass(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "src", dtype=torch.bfloat16, num_shards=2)
    dst = quantize_checkpoint(src, tmp_path / "dst")
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    index = json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.3.down_proj.weight_packed" in index
    assert "model.layers.1.mlp.shared_experts.down_proj.weight" in index

    loaded = load_model(dst, dtype=torch.float32)
    assert isinstance(loaded.model.layers[1].mlp.experts, Int4Experts)
    logits = loaded(IDS)
    assert_close_to_oracle(logits, reference_logits(dst, IDS))
    in_memory = quantize_experts_int4(load_model(src, dtype=torch.float32))
    torch.testing.assert_close(in_memory(IDS), logits, rtol=0, atol=0)


def test_fp8_checkpoint_quantizes_to_bf16_plus_int4(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "src", fp8=True, kimi_k25=True)
    dst = quantize_checkpoint(src, tmp_path / "dst")
    with safe_open(dst / "model.safetensors", framework="pt") as handle:
        names = set(handle.keys())
        assert handle.get_tensor("language_model.model.layers.0.self_attn.o_proj.weight").dtype == torch.bfloat16
    assert not any(n.endswith("weight_scale_inv") for n in names)
    assert_close_to_oracle(load_model(dst, dtype=torch.float32)(IDS), reference_logits(dst, IDS))


def test_cli_info_reports_counts_and_kv_bytes(tmp_path):
    path = write_tiny_checkpoint(tmp_path)
    result = CliRunner().invoke(model_app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "active per token" in result.output
    assert "KV cache per token 240 B" in result.output  # (32 + 8) x 2 bytes x 3 layers


def test_cli_quantize_writes_int4(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "src")
    result = CliRunner().invoke(model_app, ["quantize", str(src), str(tmp_path / "dst"), "--group-size", "32"])
    assert result.exit_code == 0, result.output
    assert "int4" in CliRunner().invoke(model_app, ["info", str(tmp_path / "dst")]).output


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    result = CliRunner().invoke(model_app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    src = write_tiny_checkpoint(tmp_path / "src", int4=True)
    result = CliRunner().invoke(model_app, ["quantize", str(src), str(tmp_path / "dst")])
    assert result.exit_code == 2 and "already has INT4" in result.output
