"""Orchestration overhead: wall time of big swarms against the ideal critical-path time.

A fake OpenAI-compatible server (a test double, in its own process) answers every call
after a fixed latency (20 ms). The orchestrator creates one sub-agent kind and assigns N
tasks in one turn; each sub-agent makes T `echo` tool calls, one per step, then answers.
With the concurrency limit C, the ideal wall time is the latency times the critical
path: 3 orchestrator steps plus ceil(N / C) waves of (T + 1) sub-agent steps. Every run
writes its full trace to a real SQLite file. Each scenario runs in a fresh process, so its
peak memory (max RSS) is its own.

    python bench/swarm_overhead.py                    # 100 x 15 and 1000 x 15, C = 16
    python bench/swarm_overhead.py --concurrency 64 --scenarios 1000x15
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(port_queue: multiprocessing.Queue, latency_s: float, stream: bool) -> None:  # type: ignore[type-arg]
    import socket

    import uvicorn

    from swarm.testing.fake_openai import FakeOpenAIServer, SwarmBrain

    # The brain reads N and T from the orchestrator's prompt, so one server serves all scenarios.
    class Brain(SwarmBrain):
        def __call__(self, body):  # type: ignore[no-untyped-def]
            prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
            if "assign_task" in {t["function"]["name"] for t in body.get("tools") or []}:
                n = int(prompt.split()[1])
                self.tasks = [f"task {i}" for i in range(n)]
            return super().__call__(body)

    brain = Brain(subagent_tool_calls=int(os.environ.get("BENCH_TOOL_CALLS", "15")), latency_s=latency_s)
    server = FakeOpenAIServer(brain)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    config = uvicorn.Config(server.app(), log_level="warning", access_log=False, lifespan="off", http="httptools")
    uvicorn.Server(config).run(sockets=[sock])


def run_scenario(base_url: str, num_subagents: int, tool_calls: int, concurrency: int, stream: bool) -> dict[str, float]:
    import anyio

    from storage.store import TraceStore
    from swarm.backends.openai_compat import OpenAIChatModel
    from swarm.backends.retry import AdaptiveLimiter, RetryingModel
    from swarm.cli import event_loop_options, tune_gc
    from swarm.coordinator import Coordinator, RunRequest
    from swarm.limits import Limits
    from swarm.recorder import Recorder
    from swarm.testing.echo_kit import EchoKit

    limits = Limits(max_subagents=num_subagents, max_tool_calls=num_subagents * (tool_calls + 1) + 1,
                    max_concurrency=concurrency)
    with tempfile.TemporaryDirectory() as folder:
        store = TraceStore(Path(folder) / "traces.db")

        async def main():  # type: ignore[no-untyped-def]
            model = OpenAIChatModel(base_url, model_name="fake-kimi", api_key=None, stream=stream)
            retrying = RetryingModel(model, limiter=AdaptiveLimiter(concurrency + 1))
            request = RunRequest(prompt=f"run {num_subagents} tasks", limits=limits)
            with Recorder(store) as recorder:
                outcome = await Coordinator(request, retrying, [EchoKit()], recorder).run()
                recorder.flush()
            await retrying.aclose()
            return outcome

        tune_gc()  # as `swarm run` does
        started = time.perf_counter()
        outcome = anyio.run(main, backend_options=event_loop_options())
        wall_s = time.perf_counter() - started
        assert outcome.status == "succeeded", outcome.stop_reason
        num_rows = len(store.tool_calls(outcome.run_id))
    return {
        "wall_s": wall_s,
        "critical_steps": outcome.critical_steps,
        "num_tool_calls": outcome.num_tool_calls,
        "tool_call_rows": num_rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="100x15,1000x15", help="comma-separated NxT")
    parser.add_argument("--concurrency", type=int, default=16, help="max_concurrency (K2.5's default is 16)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--no-stream", action="store_true", help="plain JSON responses instead of SSE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stream = not args.no_stream

    if args.child:  # one scenario in this fresh process: "base_url N T"
        base_url, n, t = args.child.split()
        print(json.dumps(run_scenario(base_url, int(n), int(t), args.concurrency, stream)))
        return

    latency_s = args.latency_ms / 1000
    scenarios = [tuple(int(x) for x in s.split("x")) for s in args.scenarios.split(",")]
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    results = []
    for n, t in scenarios:
        os.environ["BENCH_TOOL_CALLS"] = str(t)
        server = ctx.Process(target=serve, args=(ports, latency_s, stream), daemon=True)
        server.start()
        base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
        time.sleep(0.5)
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"{base_url} {n} {t}", "--concurrency", str(args.concurrency)]
                + (["--no-stream"] if args.no_stream else []),
                capture_output=True, text=True, check=True,
            )
        finally:
            server.terminate()
            server.join()
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        waves = math.ceil(n / args.concurrency)
        ideal_s = latency_s * (3 + waves * (t + 1))
        figures.update(n=n, t=t, ideal_s=ideal_s, ratio=figures["wall_s"] / ideal_s)
        results.append(figures)
        print(
            f"{n:>5} sub-agents x {t} tool calls, concurrency {args.concurrency}, {args.latency_ms:g} ms/call, "
            f"{'SSE' if stream else 'JSON'}: wall {figures['wall_s']:.2f}s, ideal {ideal_s:.2f}s, "
            f"ratio {figures['ratio']:.3f}, {figures['num_tool_calls']} tool calls "
            f"({figures['tool_call_rows']} traced), peak RSS {figures['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
