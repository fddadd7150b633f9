"""The correctness oracle: transformers' DeepseekV3ForCausalLM built from a checkpoint folder.

Reads the folder independently of model_runtime's loader: unwraps `kimi_k25`, strips
`language_model.`, dequantizes INT4 experts with a byte-wise unpacking written from
compressed-tensors' documented layout (not our unpacker) and FP8 blocks with a Kronecker
product, then fuses per-expert weights into transformers' 3-D expert tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

_HF_KEYS = (
    "vocab_size hidden_size intermediate_size moe_intermediate_size num_hidden_layers num_attention_heads "
    "q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim n_routed_experts n_shared_experts "
    "num_experts_per_tok n_group topk_group norm_topk_prob routed_scaling_factor first_k_dense_replace "
    "rms_norm_eps max_position_embeddings tie_word_embeddings attention_bias"
).split()


def reference_unpack_int4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Little-endian bytes of each int32 word: low nibble is the even column, high the odd."""
    raw = packed.numpy().astype("<i4").view(np.uint8)  # [out, in/2]
    cols = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.int64)
    cols[:, 0::2], cols[:, 1::2] = raw & 0x0F, raw >> 4
    q = torch.from_numpy(cols - 8).double()  # [out, in]
    group = q.shape[1] // scale.shape[1]
    return (q * scale.double().repeat_interleave(group, dim=1)).float()


def reference_dequant_fp8(weight: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    full = torch.kron(scale_inv.double(), torch.ones(128, 128, dtype=torch.float64))
    return (weight.double() * full[: weight.shape[0], : weight.shape[1]]).float()


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((path / "config.json").read_text())
    if config["model_type"] == "kimi_k25":
        config = config["text_config"]
    raw: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        raw.update(load_file(str(file)))
    raw = {k.removeprefix("language_model."): v for k, v in raw.items() if not k.startswith(("vision_", "mm_"))}
    weights: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        if name.endswith("weight_packed"):
            stem = name.removesuffix(".weight_packed")
            weights[stem + ".weight"] = reference_unpack_int4(value, raw[stem + ".weight_scale"])
        elif value.dtype == torch.float8_e4m3fn:
            weights[name] = reference_dequant_fp8(value, raw[name.removesuffix(".weight") + ".weight_scale_inv"])
        elif not name.endswith(("weight_scale", "weight_shape", "weight_scale_inv")):
            weights[name] = value.float()
    return config, weights


def reference_model(path: str | Path) -> DeepseekV3ForCausalLM:
    config, weights = read_checkpoint(Path(path))
    rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
    rope["rope_type"] = rope.pop("type", rope.get("rope_type", "default"))
    rope.setdefault("rope_theta", config["rope_theta"])
    hf_config = DeepseekV3Config(
        **{k: config[k] for k in _HF_KEYS}, num_key_value_heads=config["num_attention_heads"],
        rope_parameters=rope, num_mtp_layers=0,
    )
    hf_config._attn_implementation = "eager"
    hf_config._experts_implementation = "eager"
    model = DeepseekV3ForCausalLM(hf_config).float().eval()
    state = model.state_dict()
    experts = config["n_routed_experts"]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}.mlp.experts"
        if f"{p}.0.gate_proj.weight" not in weights:
            continue
        gate_up = [
            torch.cat([weights.pop(f"{p}.{e}.gate_proj.weight"), weights.pop(f"{p}.{e}.up_proj.weight")])
            for e in range(experts)
        ]
        weights[f"{p}.gate_up_proj"] = torch.stack(gate_up)
        weights[f"{p}.down_proj"] = torch.stack([weights.pop(f"{p}.{e}.down_proj.weight") for e in range(experts)])
    if config.get("tie_word_embeddings"):
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    missing = set(state) - set(weights)
    unexpected = set(weights) - set(state)
    assert not missing and not unexpected, (missing, unexpected)
    model.load_state_dict(weights)
    return model


def reference_logits(path: str | Path, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference_model(path)(input_ids).logits


def assert_close_to_oracle(logits: torch.Tensor, reference: torch.Tensor, tolerance: float = 1e-4) -> None:
    """Max error relative to the largest reference logit, and identical top-1 everywhere."""
    error = ((logits.float() - reference).abs().max() / reference.abs().max()).item()
    assert error <= tolerance, f"max relative logit error {error:.2e} > {tolerance:.0e}"
    assert torch.equal(logits.argmax(-1), reference.argmax(-1)), "top-1 differs from the oracle"
