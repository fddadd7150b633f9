"""Output tokens per second: our engine against transformers' `generate`, one run.

32 concurrent requests of mixed prompt and output lengths on the same tiny random
checkpoint (init-tiny), float32: (1) transformers `generate`, one prompt at a time;
(2) transformers `generate`, all prompts in one left-padded batch; (3) our engine,
all requests submitted at once. Greedy, EOS ignored, so every run makes the same
number of tokens. Each measurement is the best of `--repeats` interleaved runs (the
machine may be shared). Prints the figures and the ratios.

    PYTHONPATH=. python bench/engine_throughput.py [--device cuda] [--num-requests 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.model_runtime.oracle

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
        with LLM(path, dtype=torch.float32, device=args.device, config=config) as llm:
            engine(llm, prompts[:2], [2, 2])  # warm-up
            hf_batched(hf, prompts[:2], [2, 2], args.device)
            results: dict[str, float] = {}
            if not args.skip_one_at_a_time:
                results["transformers generate, one at a time"] = hf_one_at_a_time(hf, prompts, output_lens, args.device)  # slow: once
            batched, ours = [], []
            for _ in range(args.repeats):
                batched.append(hf_batched(hf, prompts, output_lens, args.device))
                llm.reset_prefix_cache()  # no run reuses the previous run's prompts
                ours.append(engine(llm, prompts, output_lens))
            results["transformers generate, batched"] = min(batched)
            results["moe-swarm engine"] = min(ours)
    print(f"{args.num_requests} requests, {num_tokens} output tokens, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens, device {args.device}, {torch.get_num_threads()} CPU threads"
          + (f" ({args.engine_threads} for the engine)" if args.engine_threads else ""))
    ours = num_tokens / results["moe-swarm engine"]
    for name, seconds in results.items():
        rate = num_tokens / seconds
        print(f"{name:<40} {seconds:8.2f} s {rate:10.1f} output tok/s   engine is {ours / rate:5.2f}x")


if __name__ == "__main__":
    main()
