"""Benchmark: decode tokens/s of an INT4 Moonlight-16B-A3B-shaped model on one GPU, and
the memory bandwidth it achieves against the device's peak (the decode roofline).

Shapes are Moonlight-16B-A3B's (moonshotai/Moonlight-16B-A3B config.json, as quoted in
docs KIMI_FACTS.md: hidden 2048, 27 layers with the first dense, 16 heads, dense
intermediate 11264, 64 routed experts of 1408 top-6 plus 2 shared, kv_lora_rank 512,
no q_lora, qk_nope 128, qk_rope 64, v_head 128, vocab 163840, routed_scaling 2.446,
rope_theta 50000, rms eps 1e-5). Weights are random and made in memory on the device
(no checkpoint, no download): bf16 everywhere but the routed experts, which are INT4
packed as compressed-tensors lays them out (group 32), as Kimi K2-Thinking ships them.

For each batch size, B prompts are prefilled, then decode steps of the engine
(`LLMEngine.step`: scheduler, runner, sampler, as served) are timed, with CUDA graphs
and, as the baseline in the same run, eager. Bytes a decode step must read: every
non-expert weight (of the embedding table only the B rows looked up), the routed
experts the step activates (distinct experts per layer, counted by hooks on the routers
during extra eager steps) and the latent cache of every sequence's context (its real
length; the graphs' power-of-two context padding reads more, and is not counted).
Achieved bandwidth = those bytes / step time, shown against the device's peak (a table
by device name or `--peak-gbps`) and against a measured device-to-device copy.

    PYTHONPATH=. python bench/gpu_decode.py              # full size, CUDA
    PYTHONPATH=. python bench/gpu_decode.py --smoke      # tiny shapes, any device (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from model_runtime.config import ModelConfig
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.layers.moe import TopkRouter
from model_runtime.loader import build_empty_model
from model_runtime.quant.convert import int4_quantization_config
from model_runtime.quant.int4 import Int4Experts

PEAK_GBPS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 80GB HBM3": 3350.0, "A100-SXM4-80GB": 2039.0, "A100 80GB": 2000.0}
GOAL_FRACTION = 0.5  # of the roofline, at batch 1

MOONLIGHT: dict[str, Any] = {
    "model_type": "deepseek_v3", "vocab_size": 163840, "hidden_size": 2048, "intermediate_size": 11264,
    "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16, "q_lora_rank": None,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "routed_scaling_factor": 2.446, "first_k_dense_replace": 1,
    "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "max_position_embeddings": 8192,
}  # fmt: skip
SMOKE = {
    **MOONLIGHT, "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256, "moe_intermediate_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 2, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
}  # fmt: skip


def random_int4_model(shape: dict[str, Any], device: torch.device, seed: int = 0) -> torch.nn.Module:
    """bf16 weights ~ N(0, 1/in), INT4 experts with random nibbles and scales giving the same spread."""
    config = ModelConfig.from_dict({**shape, "quantization_config": int4_quantization_config(shape["num_hidden_layers"])})
    model = build_empty_model(config, torch.bfloat16, device)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("_packed"):
                tensor.random_(-(2**31), 2**31)
            elif name.endswith("_scale"):  # a uniform nibble has std 4.6; in = 32 * groups
                tensor.fill_((tensor.shape[-1] * 32) ** -0.5 / 4.6)
            elif name.endswith("norm.weight"):
                tensor.fill_(1.0)
            elif name.endswith("e_score_correction_bias"):
                tensor.zero_()
            elif tensor.is_floating_point() and tensor.dim() == 2:
                tensor.normal_(0.0, tensor.shape[-1] ** -0.5)
    return model


def weight_bytes(model: torch.nn.Module, batch: int) -> tuple[int, int]:
    """(bytes of non-expert weights a decode step of `batch` reads, bytes of one routed expert)."""
    expert_buffers = {id(b) for m in model.modules() if isinstance(m, Int4Experts) for b in m.buffers()}
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in expert_buffers}
    embed = model.model.embed_tokens.weight
    tensors.pop(id(embed))
    total = sum(t.numel() * t.element_size() for t in tensors.values()) + batch * embed.shape[1] * embed.element_size()
    experts = next(m for m in model.modules() if isinstance(m, Int4Experts))
    per_expert = sum(b.numel() * b.element_size() for b in experts.buffers()) // experts.num_experts
    return total, per_expert


def copy_gbps(device: torch.device, num_bytes: int) -> float:
    """Achievable bandwidth: a device-to-device copy, bytes read plus bytes written per second."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * num_bytes / min(times) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode(model: torch.nn.Module, device: torch.device, batch: int, args: argparse.Namespace, *, is_eager: bool) -> tuple[float, float]:
    """(median seconds per decode step, mean distinct experts per MoE layer per step; the
    latter from `probe` extra eager steps with router hooks, 0 when not probed)."""
    config = EngineConfig(
        num_kv_blocks=batch * (-(-(args.prompt_len + args.steps + args.warmup + 4) // 16)) + 8,
        max_num_seqs=batch, max_num_batched_tokens=batch * args.prompt_len, enforce_eager=is_eager,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(batch)
    prompts = [torch.randint(0, model.config.vocab_size, (args.prompt_len,), generator=gen).tolist() for _ in range(batch)]
    num_probe = 2 if is_eager else 0
    params = SamplingParams(temperature=0, max_tokens=args.warmup + args.steps + num_probe + 1, ignore_eos=True)
    routed: list[torch.Tensor] = []
    with LLM.from_model(model, None, config, dtype=torch.bfloat16, device=str(device)) as llm:
        engine = llm.engine  # stepped here, without the LLM's loop thread
        for prompt in prompts:
            engine.add_request(prompt, params)
        while any(r.seq.num_computed_tokens < len(r.prompt_token_ids) for r in engine.requests.values()):
            engine.step()  # prefill
        times = []
        for _ in range(args.warmup + args.steps):
            start = time.perf_counter()
            engine.step()  # returns after sampling: synced
            times.append(time.perf_counter() - start)
        hooks = [m.register_forward_hook(lambda _m, _i, out: routed.append(out[0].clone())) for m in model.modules() if isinstance(m, TopkRouter)]
        try:
            for _ in range(num_probe):
                engine.step()
        finally:
            for hook in hooks:
                hook.remove()
    distinct = statistics.mean(len(idx.unique()) for idx in routed) if routed else 0.0
    return statistics.median(times[args.warmup :]), distinct


def peak_gbps(device: torch.device, flag: float | None) -> tuple[float | None, str]:
    if flag is not None:
        return flag, "--peak-gbps"
    if device.type != "cuda":
        return None, "unknown on cpu (pass --peak-gbps)"
    name = torch.cuda.get_device_name(device)
    for key, gbps in PEAK_GBPS.items():
        if key in name:
            return gbps, name
    return None, f"{name} not in the table (pass --peak-gbps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, few steps: checks the script runs (CI, CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed decode steps per run")
    parser.add_argument("--warmup", type=int, default=None, help="untimed decode steps first (graph capture)")
    parser.add_argument("--peak-gbps", type=float, default=None, help="the device's peak memory bandwidth, GB/s")
    args = parser.parse_args()
    smoke = args.smoke
    args.batches = args.batches or ([1, 2] if smoke else [1, 8, 64])
    args.prompt_len = args.prompt_len or (8 if smoke else 200)  # 200 + 36 stays in one 256-token context bucket
    args.steps = args.steps or (3 if smoke else 32)
    args.warmup = args.warmup or (1 if smoke else 4)
    device = torch.device(args.device)
    shape = SMOKE if smoke else MOONLIGHT
    if device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 4))
    model = random_int4_model(shape, device)
    c = model.config
    print(
        f"model: {'smoke (tiny) ' if smoke else ''}Moonlight-16B-A3B shapes, hidden {c.hidden_size}, {c.num_hidden_layers} layers "
        f"({c.num_moe_layers} MoE), {c.n_routed_experts} experts x {c.moe_intermediate_size} top {c.num_experts_per_tok} "
        f"+ {c.n_shared_experts} shared, vocab {c.vocab_size}; INT4 routed experts, bf16 rest; device {device}"
    )
    peak, peak_source = peak_gbps(device, args.peak_gbps)
    copy = copy_gbps(device, (32 if smoke or device.type == "cpu" else 1024) << 20)
    print(f"peak bandwidth: {f'{peak:.0f} GB/s' if peak else 'n/a'} ({peak_source}); measured d2d copy: {copy:.0f} GB/s")
    print(f"prompt {args.prompt_len} tokens, {args.warmup} + {args.steps} decode steps per run (median step)")
    entry_bytes = (c.kv_lora_rank + c.qk_rope_head_dim) * 2 * c.num_hidden_layers  # bf16 latent + rope key, all layers
    is_graphed = device.type == "cuda"
    fraction_at_1 = None
    for batch in args.batches:
        eager_s, distinct = decode(model, device, batch, args, is_eager=True)
        step_s = decode(model, device, batch, args, is_eager=False)[0] if is_graphed else eager_s
        dense, per_expert = weight_bytes(model, batch)
        context = args.prompt_len + args.warmup + args.steps // 2  # the median step's
        kv = batch * context * entry_bytes
        experts = round(distinct * c.num_moe_layers * per_expert)
        total = dense + experts + kv
        gbps = total / step_s / 1e9
        ratio_peak = gbps / peak if peak else None
        if batch == 1:
            fraction_at_1 = ratio_peak
        graphs = f"graphs; eager {eager_s * 1e3:.2f} ms: graphs {eager_s / step_s:.2f}x faster" if is_graphed else f"eager; no CUDA graphs on {device.type}"
        print(
            f"batch {batch:3d}: {batch / step_s:9.1f} tok/s  {step_s * 1e3:7.2f} ms/step ({graphs})\n"
            f"           bytes/step {total / 1e6:.1f} MB (weights {dense / 1e6:.1f}, experts {experts / 1e6:.1f} "
            f"from {distinct:.1f} of {c.n_routed_experts} per layer, kv {kv / 1e6:.1f}); achieved {gbps:.1f} GB/s = "
            f"{f'{ratio_peak:.1%}' if ratio_peak is not None else 'n/a'} of peak, {gbps / copy:.1%} of measured copy"
        )
    if fraction_at_1 is not None:
        verdict = "met" if fraction_at_1 >= GOAL_FRACTION else "NOT met"
        print(f"goal: >= {GOAL_FRACTION:.0%} of roofline at batch 1: {fraction_at_1:.1%}, {verdict}")
    else:
        print(f"goal: >= {GOAL_FRACTION:.0%} of roofline at batch 1: not judged (no peak bandwidth for {device.type}, or batch 1 not run)")


if __name__ == "__main__":
    main()
