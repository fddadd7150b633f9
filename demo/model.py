"""The demo model: its config, a differentiable forward for training, and export to a checkpoint.

The architecture is model_runtime's DeepSeek-V3 / Kimi K2 decoder, unchanged (MLA,
sigmoid-routed experts plus a shared expert, `noaux_tc` selection bias). Its
`forward` runs under `torch.inference_mode` (it serves), so training goes through
`train_logits`: the same modules, called layer by layer, with `PackedCausalAttention`
in place of the serving cache (the `LatentAttention` seam of layers/mla.py). The
checkpoint is written in the Hugging Face layout `load_model` and `LLM` read, routed
experts INT4 (compressed-tensors pack-quantized) by model_runtime's quantizer.

Shapes: B rows, T tokens per row, N = B*T, H heads, C kv_lora_rank, R rope dims.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime.config import ModelConfig
from model_runtime.loader import load_model
from model_runtime.layers.moe import MoE, TopkRouter
from model_runtime.models.deepseek_v3 import DeepseekV3ForCausalLM
from model_runtime.testing import write_checkpoint
from model_runtime.tiny_tokenizer import KIMI_SPECIAL_OFFSETS


def demo_config(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """config.json of the demo model (about 4M parameters, 1.3M active per token)."""
    num_base = vocab_size - 256
    config: dict[str, Any] = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2",
        "vocab_size": vocab_size, "hidden_size": 192, "intermediate_size": 512, "moe_intermediate_size": 192,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
        "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
        "norm_topk_prob": True, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_nextn_predict_layers": 0,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": False, "attention_bias": False, "hidden_act": "silu",
        "bos_token_id": num_base + KIMI_SPECIAL_OFFSETS["[BOS]"],
        "eos_token_id": num_base + KIMI_SPECIAL_OFFSETS["[EOS]"], "torch_dtype": "float32",
    }  # fmt: skip
    config.update(overrides)
    return config


def build_model(config: dict[str, Any], *, seed: int = 0) -> DeepseekV3ForCausalLM:
    """A freshly initialised float32 model (GPT-2-style init, residual outputs scaled down)."""
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(ModelConfig.from_dict(config))
    num_layers = config["num_hidden_layers"]
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            nn.init.ones_(param)
        elif name.endswith(("o_proj.weight", "down_proj.weight", "experts.w2")):
            nn.init.normal_(param, std=0.02 / (2 * num_layers) ** 0.5)
        else:
            nn.init.normal_(param, std=0.02)
    for module in model.modules():
        if isinstance(module, TopkRouter):
            module.e_score_correction_bias.zero_()
    return model.train()


class BatchCausalAttention:
    """`LatentAttention` over B rows of T tokens, each row one causal sequence (padding at
    its end, which no real token attends to)."""

    def __init__(self, num_rows: int, row_len: int) -> None:
        self.num_rows, self.row_len = num_rows, row_len

    def __call__(self, layer_idx: int, q_latent: torch.Tensor, q_pe: torch.Tensor, kv_latent: torch.Tensor,
                 k_pe: torch.Tensor, softmax_scale: float) -> torch.Tensor:  # fmt: skip
        b, t = self.num_rows, self.row_len
        heads = q_latent.shape[1]
        q = torch.cat([q_latent, q_pe], dim=-1).view(b, t, heads, -1).transpose(1, 2)  # [B, H, T, C+R]
        k = torch.cat([kv_latent, k_pe], dim=-1).view(b, 1, t, -1)  # [B, 1, T, C+R]
        v = kv_latent.view(b, 1, t, -1)  # [B, 1, T, C]
        k, v = k.expand(b, heads, t, k.shape[-1]), v.expand(b, heads, t, v.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=softmax_scale)  # [B, H, T, C]
        return out.transpose(1, 2).reshape(b * t, heads, -1)  # [N, H, C]


def train_logits(model: DeepseekV3ForCausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits `[B, T, V]` with gradients, as `model(input_ids)` computes them without."""
    b, t = input_ids.shape
    attention = BatchCausalAttention(b, t)
    x = model.model.embed_tokens(input_ids.reshape(-1))  # [N, D]
    positions = torch.arange(t, device=input_ids.device).repeat(b)  # [N]
    cos, sin = model.rotary(positions, x.dtype)  # [N, R/2]
    for layer in model.model.layers:
        x = layer(x, cos, sin, attention)  # [N, D]
    return model.lm_head(model.model.norm(x)).view(b, t, -1)  # [B, T, V]


class RoutingBalancer:
    """DeepSeek-V3's auxiliary-loss-free balancing: after each step, nudge every layer's
    selection bias up for under-loaded experts and down for over-loaded ones."""

    def __init__(self, model: nn.Module, rate: float = 1e-3) -> None:
        self.rate = rate
        self.loads: dict[TopkRouter, torch.Tensor] = {}
        for module in model.modules():
            if isinstance(module, MoE):
                module.gate.register_forward_hook(self._record)

    def _record(self, router: nn.Module, inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        assert isinstance(router, TopkRouter)
        counts = torch.bincount(output[0].flatten(), minlength=router.weight.shape[0]).float()
        self.loads[router] = self.loads.get(router, 0) + counts

    @torch.no_grad()
    def update(self) -> float:
        """Applies the nudges; returns the worst layer's max load over mean load."""
        worst = 1.0
        for router, load in self.loads.items():
            router.e_score_correction_bias += self.rate * torch.sign(load.mean() - load)
            worst = max(worst, float(load.max() / load.mean().clamp(min=1)))
        self.loads.clear()
        return worst


def hf_weights(model: DeepseekV3ForCausalLM) -> dict[str, torch.Tensor]:
    """The model's tensors under the checkpoint's names (stacked experts split per expert)."""
    weights: dict[str, torch.Tensor] = {}
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in state.items():
        tensor = tensor.detach().float().cpu()
        if name.startswith("rotary."):
            continue
        if name.endswith("mlp.experts.w13"):
            stem, hidden = name.removesuffix("w13"), tensor.shape[1] // 2
            for e in range(tensor.shape[0]):
                weights[f"{stem}{e}.gate_proj.weight"] = tensor[e, :hidden].clone()
                weights[f"{stem}{e}.up_proj.weight"] = tensor[e, hidden:].clone()
        elif name.endswith("mlp.experts.w2"):
            stem = name.removesuffix("w2")
            for e in range(tensor.shape[0]):
                weights[f"{stem}{e}.down_proj.weight"] = tensor[e].clone()
        else:
            weights[name] = tensor.clone()
    return weights


def load_checkpoint_weights(model: DeepseekV3ForCausalLM, checkpoint_dir: str | Path) -> None:
    """Loads an exported checkpoint into a training model: read by the runtime's loader
    (`load_model`), its packed INT4 experts dequantized to the dense stacks training
    updates. Names and shapes must match (`load_state_dict`, strict)."""
    from model_runtime.quant.int4 import unpack_int4

    state = load_model(checkpoint_dir, dtype=torch.float32).state_dict()
    for name in [n for n in state if n.endswith(("experts.w13_packed", "experts.w2_packed"))]:
        stem = name.removesuffix("_packed")
        state[stem] = unpack_int4(state.pop(name), state.pop(stem + "_scale"))
    model.load_state_dict(state)


# The projections that write a layer's output into the residual stream: zeroed in a new layer.
_RESIDUAL_WRITERS = ("self_attn.o_proj.weight", "mlp.experts.w2", "mlp.shared_experts.down_proj.weight", "mlp.down_proj.weight")


def check_growth(config: dict[str, Any], after: list[int]) -> None:
    """Raises ValueError unless `after` names MoE layers of `config` (see grow_layers)."""
    num_layers, dense = config["num_hidden_layers"], config.get("first_k_dense_replace", 0)
    if not after or not all(dense <= i < num_layers for i in after):
        raise ValueError(f"layers to grow after must be indices of MoE layers ({dense} to {num_layers - 1}), not {after}")


def grow_layers(model: DeepseekV3ForCausalLM, config: dict[str, Any], after: list[int]) -> tuple[DeepseekV3ForCausalLM, dict[str, Any]]:
    """A deeper model that computes exactly what `model` does (block expansion, as LLaMA Pro).

    After each layer index in `after` (once per time it is named), a copy of that layer
    whose output projections are zero (`_RESIDUAL_WRITERS`): it adds nothing to the
    residual stream until training moves them, so training resumes from the same loss
    with more capacity. A new layer has the type of the one it copies, so it may not
    follow a dense layer (`first_k_dense_replace`)."""
    check_growth(config, after)
    num_layers = config["num_hidden_layers"]
    sources: list[tuple[int, bool]] = []  # (old layer index, is a new copy) for each new index
    for i in range(num_layers):
        sources.append((i, False))
        sources += [(i, True)] * after.count(i)
    grown_config = {**config, "num_hidden_layers": len(sources)}
    grown = DeepseekV3ForCausalLM(ModelConfig.from_dict(grown_config))
    old = model.state_dict()
    state = {name: tensor for name, tensor in old.items() if not name.startswith("model.layers.")}
    for new_index, (old_index, is_copy) in enumerate(sources):
        prefix = f"model.layers.{old_index}."
        for name, tensor in old.items():
            if name.startswith(prefix):
                suffix = name.removeprefix(prefix)
                copied = tensor.clone()
                if is_copy and suffix in _RESIDUAL_WRITERS:
                    copied.zero_()
                state[f"model.layers.{new_index}.{suffix}"] = copied
    grown.load_state_dict(state)
    return grown.train(model.training), grown_config


# INT4 group size of the demo's routed experts. Kimi ships 32, but a 192-wide expert of a
# 4M-parameter model loses too much at 32: trial10's weights, 16 entities, 10 fresh seeds,
# swarm item accuracy 60% at 32, 76% at 16, 78% at 8, 79% unquantized (demo/TRIALS.md).
# 8 costs 6 bits a weight with its bf16 scale, against 4.5 at 32.
DEMO_GROUP_SIZE = 8


def export_checkpoint(model: DeepseekV3ForCausalLM, config: dict[str, Any], tokenizer_dir: str | Path,
                      out_dir: str | Path, *, int4: bool = True, dtype: torch.dtype = torch.bfloat16,
                      group_size: int = DEMO_GROUP_SIZE) -> Path:  # fmt: skip
    """Writes a loadable checkpoint: config.json, safetensors (routed experts INT4 in groups
    of `group_size`), tokenizer."""
    out = Path(out_dir)
    write_checkpoint(out, {**config, "torch_dtype": str(dtype).removeprefix("torch.")}, hf_weights(model), dtype=dtype, int4=int4,
                     group_size=group_size)  # fmt: skip
    for name in ("tiktoken.model", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_dir) / name, out / name)
    return out


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict[str, Any]) -> None:
    """Written beside `path`, then renamed over it: a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "config": config}, partial)
    partial.replace(path)


def config_json(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2)
