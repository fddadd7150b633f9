"""Tiny random checkpoints in the real Kimi / DeepSeek-V3 on-disk format, for tests and demos.

`write_tiny_checkpoint(dir, ...)` writes config.json plus safetensors exactly as the Hugging
Face checkpoints lay them out: per-expert weight names, optionally INT4 routed experts
(compressed-tensors pack-quantized), FP8 block-scaled linears, several shards with an
index, or the `kimi_k25` wrapper (`text_config`, `language_model.` prefix, a stand-in
vision tensor). Weights are scaled so that logits are well separated (useful for top-1
comparisons), not like a trained model. No tokenizer files: those belong to init-tiny.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from model_runtime.quant.fp8 import quantize_fp8_blocks
from model_runtime.quant.convert import int4_quantization_config, is_routed_expert, pack_int4_tensors

def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A Kimi-K2-shaped config (q_lora, YaRN, 1 shared expert, one group), scaled down."""
    config: dict[str, Any] = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "kimi_k2",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 48,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.827,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "num_nextn_predict_layers": 0,
        "rms_norm_eps": 1e-6,
        "rope_theta": 50000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 32.0,
            "beta_fast": 1.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
        },
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }
    config.update(overrides)
    return config


def random_weights(config: dict[str, Any], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 weights with the checkpoint's names (no wrapper prefix), per-expert experts."""
    gen = torch.Generator().manual_seed(seed)
    c = config
    dim, heads = c["hidden_size"], c["num_attention_heads"]
    qk_dim = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    weights: dict[str, torch.Tensor] = {}

    def linear(name: str, out_dim: int, in_dim: int) -> None:
        weights[name] = torch.randn(out_dim, in_dim, generator=gen) * in_dim**-0.5

    def norm(name: str, size: int) -> None:
        weights[name] = 1.0 + 0.1 * torch.randn(size, generator=gen)

    def swiglu(prefix: str, hidden: int) -> None:
        linear(f"{prefix}.gate_proj.weight", hidden, dim)
        linear(f"{prefix}.up_proj.weight", hidden, dim)
        linear(f"{prefix}.down_proj.weight", dim, hidden)

    weights["model.embed_tokens.weight"] = torch.randn(c["vocab_size"], dim, generator=gen)
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        norm(f"{p}.input_layernorm.weight", dim)
        norm(f"{p}.post_attention_layernorm.weight", dim)
        a = f"{p}.self_attn"
        if c.get("q_lora_rank") is None:
            linear(f"{a}.q_proj.weight", heads * qk_dim, dim)
        else:
            linear(f"{a}.q_a_proj.weight", c["q_lora_rank"], dim)
            norm(f"{a}.q_a_layernorm.weight", c["q_lora_rank"])
            linear(f"{a}.q_b_proj.weight", heads * qk_dim, c["q_lora_rank"])
        linear(f"{a}.kv_a_proj_with_mqa.weight", c["kv_lora_rank"] + c["qk_rope_head_dim"], dim)
        norm(f"{a}.kv_a_layernorm.weight", c["kv_lora_rank"])
        linear(f"{a}.kv_b_proj.weight", heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        linear(f"{a}.o_proj.weight", dim, heads * c["v_head_dim"])
        if layer < c["first_k_dense_replace"] or not c["n_routed_experts"]:
            swiglu(f"{p}.mlp", c["intermediate_size"])
            continue
        linear(f"{p}.mlp.gate.weight", c["n_routed_experts"], dim)
        weights[f"{p}.mlp.gate.weight"] *= 3.0  # spread the sigmoid scores so routing is decisive
        weights[f"{p}.mlp.gate.e_score_correction_bias"] = 0.1 * torch.randn(c["n_routed_experts"], generator=gen)
        for expert in range(c["n_routed_experts"]):
            swiglu(f"{p}.mlp.experts.{expert}", c["moe_intermediate_size"])
        if c["n_shared_experts"]:
            swiglu(f"{p}.mlp.shared_experts", c["moe_intermediate_size"] * c["n_shared_experts"])
    norm("model.norm.weight", dim)
    if not c.get("tie_word_embeddings"):
        linear("lm_head.weight", c["vocab_size"], dim)
    return weights


def write_checkpoint(
    path: str | Path,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    int4: bool = False,
    fp8: bool = False,
    num_shards: int = 1,
    kimi_k25: bool = False,
    group_size: int = 32,
) -> Path:
    """Write `weights` (names without prefix, float) as a checkpoint in `path`, in the
    requested storage format; returns `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    text_config = dict(config)
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        if int4 and is_routed_expert(name):
            tensors.update(pack_int4_tensors(name, weight, group_size))
        elif fp8 and name.endswith("_proj.weight"):
            tensors[name], tensors[name.removesuffix(".weight") + ".weight_scale_inv"] = quantize_fp8_blocks(weight)
        elif name.endswith("e_score_correction_bias") or name.endswith("mlp.gate.weight"):
            tensors[name] = weight.float()  # the router stays float32 in the real checkpoints
        else:
            tensors[name] = weight.to(dtype)
    if int4:
        text_config["quantization_config"] = int4_quantization_config(config["num_hidden_layers"], group_size)
    if fp8:
        text_config["quantization_config"] = {
            "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]
        }
    file_config = text_config
    if kimi_k25:
        tensors = {f"language_model.{name}": t for name, t in tensors.items()}
        tensors["vision_tower.patch_embed.proj.weight"] = torch.zeros(8, 3, 2, 2, dtype=dtype)
        tensors["mm_projector.proj.0.weight"] = torch.zeros(8, 8, dtype=dtype)
        quant = text_config.pop("quantization_config", None)
        file_config = {
            "architectures": ["KimiK25ForConditionalGeneration"],
            "model_type": "kimi_k25",
            "text_config": text_config,
            "vision_config": {"model_type": "moonvit", "hidden_size": 8, "num_hidden_layers": 1, "patch_size": 14},
        }
        if quant:
            file_config["quantization_config"] = quant
    (path / "config.json").write_text(json.dumps(file_config, indent=2))
    _save_shards(path, tensors, num_shards)
    return path


def _save_shards(path: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    if num_shards <= 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    names = list(tensors)
    per_shard = -(-len(names) // num_shards)
    weight_map: dict[str, str] = {}
    for i in range(num_shards):
        shard = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        chunk = names[i * per_shard : (i + 1) * per_shard]
        save_file({n: tensors[n] for n in chunk}, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_tiny_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    int4: bool = False,
    fp8: bool = False,
    num_shards: int = 1,
    kimi_k25: bool = False,
    **config_overrides: Any,
) -> Path:
    """A tiny random checkpoint in `path`; `config_overrides` change tiny_config's fields."""
    config = tiny_config(**config_overrides)
    weights = random_weights(config, seed=seed)
    return write_checkpoint(
        path, config, weights, dtype=dtype, int4=int4, fp8=fp8, num_shards=num_shards, kimi_k25=kimi_k25
    )
