"""Parsing config.json: rope formats, the kimi_k25 wrapper, routing checks."""

from __future__ import annotations

import math

import pytest

from model_runtime.config import ModelConfig
from model_runtime.errors import ConfigError, UnsupportedModelError
from model_runtime.layers.rope import inv_frequencies, softmax_scale
from model_runtime.testing import tiny_config


def test_rope_scaling_and_rope_parameters_forms_agree():
    old = ModelConfig.from_dict(tiny_config())
    rope = dict(tiny_config()["rope_scaling"], rope_type="yarn", rope_theta=50000.0)
    del rope["type"]
    new = ModelConfig.from_dict(tiny_config(rope_scaling=None, rope_theta=None, rope_parameters=rope))
    assert old.rope == new.rope
    assert old.rope.is_yarn and old.rope.factor == 32.0 and old.rope.theta == 50000.0


def test_softmax_scale_includes_yarn_mscale():
    config = ModelConfig.from_dict(tiny_config())
    mscale = 0.1 * 1.0 * math.log(32.0) + 1.0
    assert softmax_scale(config.rope, config.qk_head_dim) == pytest.approx(24**-0.5 * mscale**2)
    _, cos_factor = inv_frequencies(config.rope, config.qk_rope_head_dim)
    assert cos_factor == pytest.approx(1.0)  # mscale == mscale_all_dim, as in Kimi K2


def test_transformers_saved_config_parses():
    from transformers import DeepseekV3Config

    saved = DeepseekV3Config(
        hidden_size=64, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
        "original_max_position_embeddings": 1024, "mscale": 1.0, "mscale_all_dim": 1.0},
    ).to_dict()
    config = ModelConfig.from_dict(saved)
    assert config.rope.is_yarn and config.rope.factor == 4.0 and config.rope.theta == 10000.0
    assert config.n_group == 8 and config.q_lora_rank == 1536


def test_kimi_k25_wrapper_reads_text_config_and_eos_list():
    raw = {"model_type": "kimi_k25", "text_config": tiny_config(eos_token_id=[2, 3]), "vision_config": {}}
    config = ModelConfig.from_dict(raw)
    assert config.model_type == "kimi_k2" and config.weight_prefix == "language_model."
    assert config.eos_token_id == (2, 3) and config.bos_token_id == 1


def test_softmax_routing_is_rejected():
    with pytest.raises(UnsupportedModelError, match="scoring_func"):
        ModelConfig.from_dict(tiny_config(scoring_func="softmax"))


def test_groups_must_divide_experts():
    with pytest.raises(ConfigError, match="n_group"):
        ModelConfig.from_dict(tiny_config(n_group=3))


def test_missing_field_is_named():
    raw = tiny_config()
    del raw["kv_lora_rank"]
    with pytest.raises(ConfigError, match="kv_lora_rank"):
        ModelConfig.from_dict(raw)


def test_kv_bytes_per_token_for_kimi_k2():
    config = ModelConfig.from_dict(tiny_config(num_hidden_layers=61, kv_lora_rank=512, qk_rope_head_dim=64))
    assert config.kv_bytes_per_token(2) == 70_272
