"""Benchmark: prefill and single-token forward time, bf16 experts vs packed INT4 experts.

A random model with Moonlight-16B-A3B's structure (64 routed + 2 shared experts, top 6,
no q_lora, first layer dense, YaRN-free RoPE) and its shapes scaled down to fit a small
CPU box (defaults below; widen them on a bigger machine). Weights are random and built
in memory (no checkpoint files); the INT4 model is the bf16 one passed through
`quantize_experts_int4`. Prints the figures and the INT4/bf16 ratios from one run.

    PYTHONPATH=. python bench/model_forward.py [--hidden 1024 --layers 4 --prompt-len 256]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from model_runtime.config import ModelConfig
from model_runtime.layers.latent_cache import DenseLatentCache
from model_runtime.loader import build_empty_model
from model_runtime.quant.int4 import quantize_experts_int4


def moonlight_like(hidden: int, layers: int, vocab: int) -> ModelConfig:
    """Moonlight's ratios: heads of 128+64 / 128 dims, dense 5.5x, expert 0.6875x hidden."""
    return ModelConfig.from_dict(
        {
            "model_type": "deepseek_v3", "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": hidden * 11 // 2, "moe_intermediate_size": hidden * 11 // 16,
            "num_hidden_layers": layers, "num_attention_heads": hidden // 128, "q_lora_rank": None,
            "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
            "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 1,
            "topk_group": 1, "routed_scaling_factor": 2.446, "first_k_dense_replace": 1,
            "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "max_position_embeddings": 8192,
        }
    )


def random_model(config: ModelConfig) -> torch.nn.Module:
    model = build_empty_model(config, torch.bfloat16, "cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * param.shape[-1] ** -0.5)
    return model


def resident_bytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def time_forward(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, float]:
    """Seconds for a prefill of all but the last token of `ids`, and for one decode step after it."""
    prompt_len = ids.shape[0] - 1
    cache = DenseLatentCache(model.config.num_hidden_layers)
    cache.set_batch([0], [prompt_len])
    start = time.perf_counter()
    model.forward_tokens(ids[:prompt_len], torch.arange(prompt_len), cache, torch.tensor([prompt_len - 1]))
    prefill_s = time.perf_counter() - start
    cache.set_batch([0], [1])
    start = time.perf_counter()
    model.forward_tokens(ids[prompt_len:], torch.tensor([prompt_len]), cache)
    return prefill_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = moonlight_like(args.hidden, args.layers, args.vocab)
    print(
        f"model: hidden {config.hidden_size}, {config.num_hidden_layers} layers ({config.num_moe_layers} MoE), "
        f"{config.num_attention_heads} heads, 64 experts x {config.moe_intermediate_size} (top 6) + 2 shared, "
        f"vocab {config.vocab_size}; prompt {args.prompt_len} tokens, {args.threads} threads"
    )
    models = {"bf16": random_model(config)}
    models["int4"] = quantize_experts_int4(copy.deepcopy(models["bf16"]))
    ids = torch.randint(0, config.vocab_size, (args.prompt_len + 1,), generator=torch.Generator().manual_seed(1))
    timings: dict[str, list[tuple[float, float]]] = {label: [] for label in models}
    for round_idx in range(args.repeats + 1):  # alternate, so both see the same background load; round 0 warms up
        for label, model in models.items():
            if round_idx:
                timings[label].append(time_forward(model, ids))
            else:
                time_forward(model, ids)
    results = {}
    for label, model in models.items():
        # best of the repeats: the run least disturbed by other load on the box
        prefill, decode = min(t[0] for t in timings[label]), min(t[1] for t in timings[label])
        results[label] = (prefill, decode, resident_bytes(model))
        print(
            f"{label:>5}: prefill {prefill * 1e3:8.1f} ms ({args.prompt_len / prefill:7.1f} tok/s)  "
            f"decode {decode * 1e3:7.1f} ms/token  resident weights {results[label][2] / 2**20:8.1f} MiB"
        )
    (bp, bd, bb), (ip, idc, ib) = results["bf16"], results["int4"]
    print(f"int4/bf16: prefill time {ip / bp:.2f}x  decode time {idc / bd:.2f}x  resident bytes {ib / bb:.2f}x")
    dense_expert_bytes = 3 * config.hidden_size * config.moe_intermediate_size * 64 * 2 * config.num_moe_layers
    print(f"routed-expert bytes int4/bf16: {(dense_expert_bytes - (bb - ib)) / dense_expert_bytes:.3f}x")


if __name__ == "__main__":
    main()
