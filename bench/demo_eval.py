"""The demo's goals, measured: `swarm demo` over fresh seeds, swarm against single agent.

For each seed: a fresh fixture world, `--entities` entities (16 by default), the swarm
run then the single-agent run, on the demo checkpoint with the `local:` backend.
Prints one JSON line per seed and a summary: item accuracy of both modes (goal: swarm
at least 95%) and of the swarm's sub-agents' own answers (what its table copies), wall
time ratio single/swarm (goal: at least 3x at 16 entities) and critical steps of both.
Seeds start at 1,000,000,000, above every training world's.
`--web-latency S` makes the fixture site answer each request S seconds late, as a remote
site would (simulated: what the goal's figures are measured without).

    PYTHONPATH=. python bench/demo_eval.py [--model DIR] [--seeds 20] [--entities 16] [--swarm-only] [--web-latency S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import anyio

from demo.run import DEFAULT_CHECKPOINT, load_demo_model, run_demo
from demo.trajectories import TRAIN_SEED_LIMIT
from storage.store import TraceStore
from tools.fixture_web.server import MAX_LATENCY_S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--entities", type=int, default=16)
    parser.add_argument("--swarm-only", action="store_true")
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--web-latency", type=float, default=0.0, metavar="S", help="simulated latency of each request to the site")
    args = parser.parse_args()
    if not 0.0 <= args.web_latency <= MAX_LATENCY_S:
        parser.error(f"--web-latency must be between 0 and {MAX_LATENCY_S:g} seconds, not {args.web_latency}")
    model = load_demo_model(args.model)
    modes = ("swarm",) if args.swarm_only else ("swarm", "single")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(args.db or Path(tmp) / "traces.db")
        for i in range(args.seeds):
            result = run_demo(seed=TRAIN_SEED_LIMIT + i, num_entities=args.entities, model=model, store=store,
                              model_label=f"local:{args.model}", modes=modes, close_model=False, web_latency_s=args.web_latency)  # fmt: skip
            line = {"seed": TRAIN_SEED_LIMIT + i, "accuracy": result["accuracy"], "subagent_accuracy": result["subagent_accuracy"],
                    "wall_time_s": result["wall_time_s"], "critical_steps": result["critical_steps"], "status": result["status"]}  # fmt: skip
            if "single_agent" in result:
                single = result["single_agent"]
                line |= {"single_accuracy": single["accuracy"], "single_wall_time_s": single["wall_time_s"],
                         "single_critical_steps": single["critical_steps"], "speedup": result["speedup"]}  # fmt: skip
            print(json.dumps(line), flush=True)
            results.append(line)
    anyio.run(model.aclose)
    summary = {key: round(statistics.mean(r[key] for r in results), 4) for key in results[0] if key not in ("seed", "status")}
    summary["succeeded"] = sum(r["status"] == "succeeded" for r in results)
    print(json.dumps({"summary": summary, "seeds": args.seeds, "entities": args.entities, "web_latency_s": args.web_latency}))


if __name__ == "__main__":
    main()
