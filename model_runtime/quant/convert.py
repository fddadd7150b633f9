"""`swarm model quantize SRC DST`: rewrite a checkpoint with INT4 routed experts.

Turns a bf16/fp32 (or FP8 block-scaled, dequantized on the way) checkpoint's routed
experts into compressed-tensors `pack-quantized` INT4, the layout Kimi K2-Thinking and
K2.5 ship, so Moonlight-style checkpoints get the same memory saving. Everything else is
copied unchanged (FP8 tensors become bf16). Works shard by shard: one source shard's
tensors in memory at a time; shard names and the index are kept. Other files in SRC
(tokenizer, generation config) are copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model_runtime.config import ModelConfig, read_config_json
from model_runtime.errors import CheckpointNotFoundError, ShapeMismatchError, UnsupportedQuantizationError
from model_runtime.loader import checkpoint_files
from model_runtime.quant.fp8 import dequantize_fp8_blocks
from model_runtime.quant.int4 import pack_int4

EXPERT_SUFFIXES = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")


def is_routed_expert(name: str) -> bool:
    return ".mlp.experts." in name and name.endswith(EXPERT_SUFFIXES)


def int4_quantization_config(num_hidden_layers: int, group_size: int = 32) -> dict[str, Any]:
    """compressed-tensors' config block as Kimi K2-Thinking ships it (routed experts only)."""
    ignore = ["lm_head"]
    for layer in range(num_hidden_layers):
        ignore.append(f"re:.*model\\.layers\\.{layer}\\.self_attn\\..*")
        ignore.append(f"re:.*model\\.layers\\.{layer}\\.mlp\\.(shared_experts|gate_proj|up_proj|down_proj).*")
    weights = {
        "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group_size,
        "dynamic": False, "actorder": None, "observer": "minmax",
    }
    group = {"targets": ["Linear"], "input_activations": None, "output_activations": None, "weights": weights}
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": group},
        "ignore": ignore,
        "kv_cache_scheme": None,
    }


def pack_int4_tensors(name: str, weight: torch.Tensor, group_size: int = 32) -> dict[str, torch.Tensor]:
    """`X.weight` -> compressed-tensors' `X.weight_packed`, `X.weight_scale`, `X.weight_shape`."""
    stem = name.removesuffix(".weight")
    if weight.shape[1] % group_size:
        raise ShapeMismatchError(f"{name} has {weight.shape[1]} input features, not a multiple of {group_size}")
    packed, scale = pack_int4(weight, group_size)
    return {
        f"{stem}.weight_packed": packed,
        f"{stem}.weight_scale": scale,
        f"{stem}.weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64),
    }


def quantize_checkpoint(src: str | Path, dst: str | Path, *, group_size: int = 32) -> Path:
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {src} does not exist")
    raw = read_config_json(src)
    config = ModelConfig.from_dict(raw)
    if config.quantization is not None and config.quantization.method == "int4":
        raise UnsupportedQuantizationError(f"{src} already has INT4 experts")
    fp8_block = config.quantization.block_size if config.quantization else None
    files = checkpoint_files(src)
    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    for shard in sorted(set(files.values())):
        out: dict[str, torch.Tensor] = {}
        with safe_open(shard, framework="pt", device="cpu") as handle:
            for name in handle.keys():
                if name.endswith(".weight_scale_inv"):
                    continue
                tensor = handle.get_tensor(name)
                if tensor.dtype == torch.float8_e4m3fn:
                    scale_inv = _companion(files, name.removesuffix(".weight") + ".weight_scale_inv")
                    block = fp8_block or (128, 128)
                    tensor = dequantize_fp8_blocks(tensor, scale_inv, block, torch.bfloat16, name=name)
                if is_routed_expert(name):
                    out.update(pack_int4_tensors(name, tensor, group_size))
                else:
                    out[name] = tensor.contiguous()
        save_file(out, str(dst / shard.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(out, shard.name))
    if (src / "model.safetensors.index.json").is_file():
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    quant = int4_quantization_config(config.num_hidden_layers, group_size)
    raw.pop("quantization_config", None)
    if "text_config" in raw:
        raw["text_config"].pop("quantization_config", None)
    raw["quantization_config"] = quant
    (dst / "config.json").write_text(json.dumps(raw, indent=2))
    for extra in src.iterdir():
        if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in (
            "config.json", "model.safetensors.index.json"
        ):
            shutil.copy2(extra, dst / extra.name)
    return dst


def _companion(files: dict[str, Path], name: str) -> torch.Tensor:
    if name not in files:
        raise CheckpointNotFoundError(f"checkpoint has no {name}")
    with safe_open(files[name], framework="pt", device="cpu") as handle:
        return handle.get_tensor(name)
