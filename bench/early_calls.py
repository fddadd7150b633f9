"""Sub-agents started while the orchestrator streams its turn, against started after it.

A model that streams an assign turn of N calls takes time to write each (`--gap-ms` a
call: 100 ms is a 30-token call at 300 tokens/s). The agent loop starts each call as
soon as the stream has it whole (`CallContext.on_tool_call`); the baseline, in the same
run, hides the calls until the turn ends, as a loop that parses the finished response
does. A fake OpenAI-compatible server on loopback (a test double, in a thread) answers
every call after `--latency-ms`; each sub-agent makes T `echo` calls, then answers, so it
takes (T + 1) latencies. With N sub-agents, C at a time, the ideal wall times are about

    started late:   3 latencies + N gaps + ceil(N / C) (T + 1) latencies
    started early:  3 latencies + N gaps + (T + 1) latencies, when C covers what one
                    sub-agent's time lets the stream start (C >= (T + 1) latency / gap)

so the gain is the waves that the stream's own duration hides. Every run writes its trace
to a real SQLite file.

    PYTHONPATH=. python bench/early_calls.py [--scenarios 16,48,96] [--concurrency 16] [--gap-ms 100] [--latency-ms 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from storage.store import TraceStore
from swarm.backends.openai_compat import OpenAIChatModel
from swarm.backends.retry import AdaptiveLimiter, RetryingModel
from swarm.coordinator import Coordinator, RunRequest
from swarm.limits import Limits
from swarm.messages import Message, ToolSpec
from swarm.model import CallContext, ChatModel, ModelResponse
from swarm.recorder import Recorder
from swarm.testing.echo_kit import EchoKit
from swarm.testing.fake_openai import FakeOpenAIServer, SwarmBrain


class CallsAtTheEnd:
    """The baseline: the same model with `on_tool_call` withheld, so calls start after the turn."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext) -> ModelResponse:
        return await self.inner.complete(messages, tools, dataclasses.replace(context, on_tool_call=None))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def one_run(base_url: str, num_subagents: int, tool_calls: int, concurrency: int, *, early: bool, db: Path) -> float:
    model: ChatModel = OpenAIChatModel(base_url, model_name="fake-kimi", api_key=None, stream=True)
    if not early:
        model = CallsAtTheEnd(model)
    retrying = RetryingModel(model, limiter=AdaptiveLimiter(concurrency + 1))
    limits = Limits(max_subagents=num_subagents, max_tool_calls=num_subagents * (tool_calls + 1) + 1, max_concurrency=concurrency)
    request = RunRequest(prompt="fan out", limits=limits)
    started = time.perf_counter()
    with Recorder(TraceStore(db)) as recorder:
        outcome = await Coordinator(request, retrying, [EchoKit()], recorder).run()
        recorder.flush()
    wall_s = time.perf_counter() - started
    await retrying.aclose()
    if outcome.status != "succeeded":
        raise SystemExit(f"run failed: {outcome.stop_reason}")
    return wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="16,48,96", help="comma-separated numbers of sub-agents")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tool-calls", type=int, default=2, help="echo calls per sub-agent")
    parser.add_argument("--gap-ms", type=float, default=100.0, help="time the model takes to write one assign_task call")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="latency of every model call")
    args = parser.parse_args()
    latency_s, gap_s = args.latency_ms / 1000, args.gap_ms / 1000
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(s) for s in args.scenarios.split(",")):
            brain = SwarmBrain(num_subagents=n, subagent_tool_calls=args.tool_calls, latency_s=latency_s, call_gap_s=gap_s)
            with FakeOpenAIServer(brain) as server:
                late = anyio.run(lambda: one_run(server.base_url, n, args.tool_calls, args.concurrency, early=False, db=Path(folder) / f"late{n}.db"))
                early = anyio.run(lambda: one_run(server.base_url, n, args.tool_calls, args.concurrency, early=True, db=Path(folder) / f"early{n}.db"))
            figures = {"subagents": n, "concurrency": args.concurrency, "late_s": round(late, 3), "early_s": round(early, 3),
                       "speedup": round(late / early, 2)}  # fmt: skip
            results.append(figures)
            print(f"{n:>4} sub-agents, {args.concurrency} at a time, {args.gap_ms:g} ms a call, {args.latency_ms:g} ms a model call: "
                  f"started after the turn {late:.2f} s, as streamed {early:.2f} s, {late / early:.2f}x", flush=True)  # fmt: skip
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
