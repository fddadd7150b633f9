"""Prefix caching: 32 requests sharing a 2,048-token prefix, with and without the cache.

All requests are submitted at once, as a swarm's sub-agents would send them (same
system prompt and tool declarations, different tasks). For each setting it prints
the prompt tokens the model computed, against the unique prompt tokens, and the time
to first token (mean and worst). One run, figures and ratios.

    PYTHONPATH=. python bench/prefix_cache.py [--device cuda] [--prefix-len 2048]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time

import torch

from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.init_tiny import init_tiny


def run(path, prompts, *, enable_prefix_caching: bool, device: str, max_tokens: int) -> dict[str, float]:
    config = EngineConfig(block_size=16, num_kv_blocks=8192, max_num_seqs=len(prompts), max_num_batched_tokens=2048, max_model_len=4096, enable_prefix_caching=enable_prefix_caching)
    with LLM(path, dtype=torch.float32, device=device, config=config) as llm:
        llm.generate([prompts[0][-8:]], SamplingParams(temperature=0, max_tokens=2))  # warm-up, shares nothing
        before = llm.stats.num_prefill_tokens_computed
        first_token_s: dict[int, float] = {}
        done: queue.Queue[int] = queue.Queue()
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        start = time.perf_counter()

        def sink(out) -> None:
            if out.token_ids and out.request_id not in first_token_s:
                first_token_s[out.request_id] = time.perf_counter() - start
            if out.finished:
                done.put(out.request_id)

        for prompt in prompts:
            llm.submit(prompt, params, sink)
        for _ in prompts:
            done.get()
        total_s = time.perf_counter() - start
        ttfts = list(first_token_s.values())
        return {
            "prefill_tokens": llm.stats.num_prefill_tokens_computed - before,
            "ttft_mean_s": statistics.mean(ttfts),
            "ttft_max_s": max(ttfts),
            "total_s": total_s,
            "hit_rate": llm.stats.prefix_cache_hit_rate,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--prefix-len", type=int, default=2048)
    parser.add_argument("--suffix-len", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 700, (args.prefix_len,), generator=gen).tolist()
    prompts = [prefix + torch.randint(0, 700, (args.suffix_len,), generator=gen).tolist() for _ in range(args.num_requests)]
    unique = args.prefix_len + args.num_requests * args.suffix_len
    with tempfile.TemporaryDirectory() as tmp:
        path = init_tiny(tmp)
        cached = run(path, prompts, enable_prefix_caching=True, device=args.device, max_tokens=args.max_tokens)
        uncached = run(path, prompts, enable_prefix_caching=False, device=args.device, max_tokens=args.max_tokens)
    print(f"{args.num_requests} requests, shared prefix {args.prefix_len} + unique suffix {args.suffix_len} tokens, device {args.device}, {torch.get_num_threads()} CPU threads")
    print(f"unique prompt tokens: {unique}; all prompt tokens: {sum(map(len, prompts))}")
    for name, r in (("prefix cache on", cached), ("prefix cache off", uncached)):
        print(
            f"{name:<17} prefill computed {r['prefill_tokens']:7d} ({r['prefill_tokens'] / unique:5.2f}x unique)  "
            f"TTFT mean {r['ttft_mean_s']:7.3f} s  max {r['ttft_max_s']:7.3f} s  all done {r['total_s']:7.2f} s  hit rate {r['hit_rate']:.2f}"
        )
    print(f"TTFT speed-up with the cache: mean {uncached['ttft_mean_s'] / cached['ttft_mean_s']:.1f}x, max {uncached['ttft_max_s'] / cached['ttft_max_s']:.1f}x")


if __name__ == "__main__":
    main()
