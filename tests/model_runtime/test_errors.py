"""Clear errors for checkpoints we cannot load."""

from __future__ import annotations

import json

import pytest
import torch

from model_runtime import load_model
from model_runtime.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ShapeMismatchError,
    UnsupportedModelError,
    UnsupportedQuantizationError,
)
from model_runtime.testing import random_weights, tiny_config, write_checkpoint, write_tiny_checkpoint


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_missing_shard(tmp_path):
    path = write_tiny_checkpoint(tmp_path, num_shards=2)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002"):
        load_model(path)


def test_unknown_model_type(tmp_path):
    path = write_tiny_checkpoint(tmp_path)
    _edit_config(path, model_type="llama")
    with pytest.raises(UnsupportedModelError, match="'llama'"):
        load_model(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    config = tiny_config()
    weights = random_weights(config)
    weights["model.layers.2.self_attn.o_proj.weight"] = torch.zeros(64, 32)
    path = write_checkpoint(tmp_path, config, weights)
    with pytest.raises(ShapeMismatchError, match=r"model\.layers\.2\.self_attn\.o_proj\.weight"):
        load_model(path)


def test_missing_tensor_is_named(tmp_path):
    config = tiny_config()
    weights = random_weights(config)
    del weights["model.layers.1.mlp.experts.5.up_proj.weight"]
    path = write_checkpoint(tmp_path, config, weights)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.5\.up_proj"):
        load_model(path)


@pytest.mark.parametrize(
    "quant",
    [
        {"quant_method": "gptq", "bits": 4},
        {"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {}}},
        {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {"g": {"weights": {"num_bits": 8, "symmetric": True, "strategy": "group"}}},
        },
    ],
)
def test_unsupported_quantization(tmp_path, quant):
    path = write_tiny_checkpoint(tmp_path)
    _edit_config(path, quantization_config=quant)
    with pytest.raises(UnsupportedQuantizationError):
        load_model(path)
