"""Output tokens per second: our engine against transformers' `generate`, one run.

32 concurrent requests of mixed prompt and output lengths on the same tiny random
checkpoint (init-tiny), float32: (1) transformers `generate`, one prompt at a time;
(2) transformers `generate`, all prompts in one left-padded batch; (3) our engine,
all requests submitted at once; on CPU also (4) our engine without its C kernels
(model_runtime/cpu_kernels.py), its torch paths only. Greedy, EOS ignored, so every run makes the same
number of tokens. Each measurement is the best of `--repeats` interleaved runs (the
machine may be shared). Prints the figures and the ratios.

    PYTHONPATH=. python bench/engine_throughput.py [--device cuda] [--num-requests 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.model_runtime.oracle

from model_runtime import cpu_kernels
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.init_tiny import init_tiny
from tests.model_runtime.oracle import reference_model  # transformers' model with the same weights


def workload(num_requests: int, seed: int) -> tuple[list[list[int]], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 700, (int(n),), generator=gen).tolist() for n in torch.randint(16, 256, (num_requests,), generator=gen)]
    outputs = torch.randint(32, 128, (num_requests,), generator=gen).tolist()
    return prompts, outputs


def hf_one_at_a_time(model, prompts, output_lens, device) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for prompt, n in zip(prompts, output_lens):
            model.generate(torch.tensor([prompt], device=device), max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return time.perf_counter() - start


def hf_batched(model, prompts, output_lens, device) -> float:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)  # [B, T] left-padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)  # [B, T]
    start = time.perf_counter()
    with torch.no_grad():
        # One batch decodes until its longest request is done: that is how `generate` batches.
        model.generate(ids, attention_mask=mask, max_new_tokens=max(output_lens), min_new_tokens=max(output_lens), do_sample=False, eos_token_id=None, pad_token_id=0)
    return time.perf_counter() - start


def engine(llm: LLM, prompts, output_lens) -> float:
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in output_lens]
    start = time.perf_counter()
    llm.generate(prompts, params)
    return time.perf_counter() - start


@contextlib.contextmanager
def torch_paths_only() -> Iterator[None]:
    """Engines built inside use no C kernels (model_runtime/cpu_kernels.py)."""
    saved = os.environ.get(cpu_kernels.ENV_SWITCH)
    os.environ[cpu_kernels.ENV_SWITCH] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[cpu_kernels.ENV_SWITCH]
        else:
            os.environ[cpu_kernels.ENV_SWITCH] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-one-at-a-time", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--engine-threads", type=int, default=None, help="the engine loop's own CPU threads (EngineConfig.cpu_threads; default: as --threads)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prompts, output_lens = workload(args.num_requests, args.seed)
    num_tokens = sum(output_lens)
    with tempfile.TemporaryDirectory() as tmp:
        path = init_tiny(tmp)
        hf = reference_model(path).to(args.device)
        config = EngineConfig(block_size=16, num_kv_blocks=4096, max_num_seqs=args.num_requests, max_num_batched_tokens=4096,
                              cpu_threads=args.engine_threads)  # fmt: skip
        with contextlib.ExitStack() as stack:
            engines = {"moe-swarm engine": stack.enter_context(LLM(path, dtype=torch.float32, device=args.device, config=config))}
            if args.device == "cpu":  # the same engine without its C kernels (MOE_SWARM_CPU_KERNELS=0)
                with torch_paths_only():
                    engines["moe-swarm engine, torch paths only"] = stack.enter_context(LLM(path, dtype=torch.float32, device=args.device, config=config))
            for each in engines.values():
                engine(each, prompts[:2], [2, 2])  # warm-up
            hf_batched(hf, prompts[:2], [2, 2], args.device)
            results: dict[str, float] = {}
            if not args.skip_one_at_a_time:
                results["transformers generate, one at a time"] = hf_one_at_a_time(hf, prompts, output_lens, args.device)  # slow: once
            times: dict[str, list[float]] = {"transformers generate, batched": [], **{name: [] for name in engines}}
            for _ in range(args.repeats):
                times["transformers generate, batched"].append(hf_batched(hf, prompts, output_lens, args.device))
                for name, each in engines.items():
                    each.reset_prefix_cache()  # no run reuses the previous run's prompts
                    times[name].append(engine(each, prompts, output_lens))
            results.update((name, min(values)) for name, values in times.items())
    print(f"{args.num_requests} requests, {num_tokens} output tokens, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens, device {args.device}, {torch.get_num_threads()} CPU threads"
          + (f" ({args.engine_threads} for the engine)" if args.engine_threads else ""))
    ours = num_tokens / results["moe-swarm engine"]
    for name, seconds in results.items():
        rate = num_tokens / seconds
        print(f"{name:<40} {seconds:8.2f} s {rate:10.1f} output tok/s   engine is {ours / rate:5.2f}x")


if __name__ == "__main__":
    main()
