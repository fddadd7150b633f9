"""Speculative decoding with n-gram drafts on the demo's agent turns: time, steps, acceptance.

The prompts are every assistant turn of three orchestrator conversations and three single
agents of the demo task (fresh seeds), up to the turn; the model is the shipped demo
checkpoint, greedy, as `swarm demo` runs it. Each turn is generated alone (its prompt
prefilled once beforehand, so only decoding is timed), with `num_speculative_tokens` 0
(the baseline, in the same run) and each setting of `--drafts`. It prints the decode time
of all turns, the engine steps, the drafts accepted, whether every output equals the
baseline's, and the speed-up.

    PYTHONPATH=. python bench/speculative.py [--drafts 2,3,4,8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from demo.run import DEFAULT_CHECKPOINT
from demo.trajectories import TRAIN_SEED_LIMIT, encode, single_run, swarm_run
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.tokenizer import KimiTokenizer


def turn_prompts(tokenizer: KimiTokenizer) -> list[list[int]]:
    conversations = [swarm_run(TRAIN_SEED_LIMIT + 500 + i, n)[1][0] for i, n in enumerate((16, 12, 8))]
    conversations += [single_run(TRAIN_SEED_LIMIT + 600 + i, n)[1] for i, n in enumerate((8, 6, 4))]
    prompts = []
    for conversation in conversations:
        ids, is_assistant = encode(tokenizer, conversation.segments())
        prompts += [ids[:i] for i in range(1, len(ids)) if is_assistant[i] and not is_assistant[i - 1]]
    return prompts


def run(prompts: list[list[int]], drafts: int, repeats: int) -> tuple[float, int, int, int, list[list[int]]]:
    config = EngineConfig(num_speculative_tokens=drafts, cpu_threads=1)
    params = SamplingParams(temperature=0, max_tokens=600)
    with LLM(DEFAULT_CHECKPOINT, dtype=torch.float32, config=config) as llm:
        for prompt in prompts:
            llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1))  # prefilled: only decoding is timed
        times, outputs = [], []
        steps_before = llm.stats.num_steps
        for _ in range(repeats):
            start = time.perf_counter()
            outputs = [llm.generate([prompt], params)[0].token_ids for prompt in prompts]
            times.append(time.perf_counter() - start)
        stats = llm.stats
        steps = (stats.num_steps - steps_before) // repeats
        return statistics.median(times), steps, stats.num_draft_tokens // repeats, stats.num_accepted_draft_tokens // repeats, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", default="2,3,4,8", help="settings of num_speculative_tokens to compare with 0")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prompts = turn_prompts(KimiTokenizer.from_dir(DEFAULT_CHECKPOINT))
    base_time, base_steps, _, _, base_out = run(prompts, 0, args.repeats)
    num_tokens = sum(len(o) for o in base_out)
    print(f"{len(prompts)} turns, {num_tokens} tokens written (greedy, demo model, CPU)")
    print(f"drafts 0: {base_time:6.3f} s  {base_steps:5d} steps  (baseline)")
    for drafts in (int(x) for x in args.drafts.split(",")):
        elapsed, steps, proposed, accepted, outputs = run(prompts, drafts, args.repeats)
        print(f"drafts {drafts}: {elapsed:6.3f} s  {steps:5d} steps  {accepted}/{proposed} drafts accepted ({accepted / max(1, proposed):.0%})"
              f"  same output: {outputs == base_out}  {base_time / elapsed:.2f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
