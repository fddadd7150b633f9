"""The parsed model config: one frozen dataclass read from a checkpoint's config.json.

Covers the architecture that DeepSeek-V3, Moonlight and Kimi K2/K2.5/K2.6 share. Every
number comes from config.json (nothing about a particular model is baked in); the
`kimi_k25` wrapper keeps its language model under `text_config` and its weights under
the `language_model.` prefix, which `weight_prefix` records. Vision settings are read
past, not parsed: vision support is a later issue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_runtime.errors import (
    CheckpointNotFoundError,
    ConfigError,
    UnsupportedModelError,
    UnsupportedQuantizationError,
)

TEXT_MODEL_TYPES = ("deepseek_v3", "kimi_k2")
WRAPPED_MODEL_TYPES = ("kimi_k25",)


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings; `factor` 1.0 and `is_yarn` False mean plain RoPE."""

    theta: float
    is_yarn: bool = False
    factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0
    original_max_position_embeddings: int = 4096
    attention_factor: float | None = None
    is_interleaved: bool = True


@dataclass(frozen=True)
class QuantConfig:
    """How the checkpoint's weights are stored: `int4` (compressed-tensors
    pack-quantized, symmetric, grouped) or `fp8` (block-scaled e4m3)."""

    method: str
    group_size: int = 32
    block_size: tuple[int, int] = (128, 128)
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """The language model's architecture, as config.json states it."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    first_k_dense_replace: int
    rms_norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    quantization: QuantConfig | None = None
    weight_prefix: str = ""
    has_vision: bool = False

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        return self.n_routed_experts > 0 and layer_idx >= self.first_k_dense_replace

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Latent cache bytes one token costs across all layers (see layers/mla.py)."""
        return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes * self.num_hidden_layers

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        model_type = raw.get("model_type")
        prefix = ""
        has_vision = False
        quant_raw = raw.get("quantization_config")
        if model_type in WRAPPED_MODEL_TYPES:
            text = raw.get("text_config")
            if not isinstance(text, dict):
                raise ConfigError(f"model_type {model_type!r} needs a text_config object")
            has_vision = "vision_config" in raw
            prefix = "language_model."
            quant_raw = quant_raw or text.get("quantization_config")
            raw = {**text, "model_type": text.get("model_type", "kimi_k2")}
            model_type = raw["model_type"]
        if model_type not in TEXT_MODEL_TYPES:
            known = ", ".join(TEXT_MODEL_TYPES + WRAPPED_MODEL_TYPES)
            raise UnsupportedModelError(f"unknown model_type {model_type!r} (known: {known})")
        _check_routing(raw)
        try:
            eos = raw.get("eos_token_id")
            eos_ids = () if eos is None else tuple(eos) if isinstance(eos, list) else (int(eos),)
            return cls(
                model_type=model_type,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                intermediate_size=int(raw["intermediate_size"]),
                moe_intermediate_size=int(raw.get("moe_intermediate_size", 0)),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                q_lora_rank=None if raw.get("q_lora_rank") is None else int(raw["q_lora_rank"]),
                kv_lora_rank=int(raw["kv_lora_rank"]),
                qk_nope_head_dim=int(raw["qk_nope_head_dim"]),
                qk_rope_head_dim=int(raw["qk_rope_head_dim"]),
                v_head_dim=int(raw["v_head_dim"]),
                n_routed_experts=int(raw.get("n_routed_experts") or 0),
                n_shared_experts=int(raw.get("n_shared_experts") or 0),
                num_experts_per_tok=int(raw.get("num_experts_per_tok") or 0),
                n_group=int(raw.get("n_group") or 1),
                topk_group=int(raw.get("topk_group") or 1),
                norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
                routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
                first_k_dense_replace=int(raw.get("first_k_dense_replace", 0)),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope=_parse_rope(raw),
                max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                attention_bias=bool(raw.get("attention_bias", False)),
                bos_token_id=raw.get("bos_token_id"),
                eos_token_id=eos_ids,
                quantization=_parse_quant(quant_raw),
                weight_prefix=prefix,
                has_vision=has_vision,
            )
        except KeyError as exc:
            raise ConfigError(f"config.json is missing {exc.args[0]!r}") from None

    @classmethod
    def from_path(cls, path: str | Path) -> ModelConfig:
        """Read `path/config.json` (or `path` itself when it is the file)."""
        return cls.from_dict(read_config_json(path))


def read_config_json(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise CheckpointNotFoundError(f"no config.json at {file}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from None


def _check_routing(raw: dict[str, Any]) -> None:
    scoring = raw.get("scoring_func", "sigmoid")
    if scoring != "sigmoid":
        raise UnsupportedModelError(f"scoring_func {scoring!r} is not supported (only sigmoid)")
    method = raw.get("topk_method", "noaux_tc")
    if method != "noaux_tc":
        raise UnsupportedModelError(f"topk_method {method!r} is not supported (only noaux_tc)")
    experts, groups = raw.get("n_routed_experts") or 0, raw.get("n_group") or 1
    if experts and experts % groups:
        raise ConfigError(f"n_routed_experts {experts} is not divisible by n_group {groups}")


def _parse_rope(raw: dict[str, Any]) -> RopeConfig:
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    interleaved = bool(raw.get("rope_interleave", True))
    if kind in (None, "default"):
        return RopeConfig(theta=theta, is_interleaved=interleaved)
    if kind != "yarn":
        raise UnsupportedModelError(f"rope type {kind!r} is not supported (default or yarn)")
    max_pos = int(raw.get("max_position_embeddings", 4096))
    original = int(params.get("original_max_position_embeddings", max_pos))
    factor = params.get("factor")
    return RopeConfig(
        theta=theta,
        is_yarn=True,
        factor=float(factor) if factor is not None else max_pos / original,
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        mscale=float(params.get("mscale", 1.0) or 0.0),
        mscale_all_dim=float(params.get("mscale_all_dim", 0.0) or 0.0),
        original_max_position_embeddings=original,
        attention_factor=params.get("attention_factor"),
        is_interleaved=interleaved,
    )


def _parse_quant(raw: dict[str, Any] | None) -> QuantConfig | None:
    if not raw:
        return None
    method = raw.get("quant_method")
    if method == "fp8":
        block = raw.get("weight_block_size") or [128, 128]
        if raw.get("fmt", "e4m3") != "e4m3" or len(block) != 2:
            raise UnsupportedQuantizationError(f"fp8 scheme {raw} is not supported (e4m3, 2-D blocks)")
        return QuantConfig(method="fp8", block_size=(int(block[0]), int(block[1])))
    if method == "compressed-tensors":
        fmt = raw.get("format")
        groups = list((raw.get("config_groups") or {}).values())
        if fmt != "pack-quantized" or len(groups) != 1:
            raise UnsupportedQuantizationError(
                f"compressed-tensors format {fmt!r} with {len(groups)} groups is not supported "
                "(one pack-quantized group)"
            )
        weights = groups[0].get("weights") or {}
        activations = groups[0].get("input_activations")
        is_int4 = weights.get("num_bits") == 4 and weights.get("type", "int") == "int"
        if not (is_int4 and weights.get("symmetric") and weights.get("strategy") == "group") or activations:
            raise UnsupportedQuantizationError(
                f"compressed-tensors weights {weights} are not supported "
                "(int4, symmetric, group strategy, no activation quantization)"
            )
        return QuantConfig(
            method="int4", group_size=int(weights.get("group_size") or 32), ignore=tuple(raw.get("ignore") or ())
        )
    raise UnsupportedQuantizationError(f"quant_method {method!r} is not supported (compressed-tensors, fp8)")
