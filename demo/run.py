"""`swarm demo`: one wide lookup on a fresh fixture world, in swarm mode and then single mode.

Generates the world of `seed`, serves it on loopback, and runs the task twice with the
`local:` backend (our runtime generating every token) and the demo kit (real Chromium
reading the pages): first as a swarm (an orchestrator fanning out to one sub-agent per
entity), then as one agent doing the lookups in turn, the baseline that shows what
parallelism buys. Both runs are traced to the same SQLite database. The result is
DESIGN.md's run JSON of the swarm run plus `accuracy`, `subagent_accuracy`,
`single_agent` and `ground_truth`. `demo_session` (world, site, model) and `demo_result`
(the scoring) are what `run_demo` shares with `swarm demo --tui` (demo/live.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from demo.tasks import MAX_ENTITIES, WideTask, item_accuracy, seeded_task
from demo.trajectories import ORCHESTRATOR_PROMPT, SINGLE_PROMPT
from demo.web_kit import FixtureWebKit
from storage.store import TraceStore
from swarm.backends.retry import AdaptiveLimiter, RetryingModel, RetryPolicy
from swarm.coordinator import Coordinator, RunRequest
from swarm.events import FanOut, TraceSink
from swarm.limits import Limits
from swarm.model import ChatModel
from swarm.recorder import Recorder
from swarm.summary import run_summary
from tools.browser_kit import WarmBrowsers
from tools.fixture_web.server import FixtureWebServer

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoint"
MAX_TOKENS = 1024


def demo_limits(num_entities: int, mode: str) -> Limits:
    steps = 4 if mode == "swarm" else 2 * num_entities + 3
    return Limits(max_subagents=num_entities + 2, max_tool_calls=4 * num_entities + 8, max_concurrency=16,
                  orchestrator_max_steps=steps, subagent_max_steps=5, timeout_s=900)  # fmt: skip


SPECULATIVE_TOKENS = 3  # bench/speculative.py: 2-3 drafts a step did best on the demo's turns (1.4x)


def load_demo_model(checkpoint: Path) -> ChatModel:
    """The checkpoint on the embedded engine, greedy (`local:`); imports torch."""
    from swarm.backends.local import load_local_model

    # One engine thread: the demo model's steps are too small to share (EngineConfig.cpu_threads).
    # Greedy turns that copy names, paths and table rows: n-gram drafts save steps (same output).
    return load_local_model(str(checkpoint), model_name="moe-swarm-demo", temperature=0.0, max_tokens=MAX_TOKENS, cpu_threads=1, speculative_tokens=SPECULATIVE_TOKENS)


class DemoSession:
    """One demo while it is open (`demo_session`): the task, the site serving its world, the
    model every run shares, and Chromium kept open for every run (`warm`). `prepare` then
    `coordinator` give one mode's run (`open_run`: the same, as the TUI's opener);
    `demo_result` scores the finished runs from the trace."""

    def __init__(self, task: WideTask, base_url: str, model: RetryingModel, warm: WarmBrowsers, *, num_entities: int,
                 model_label: str) -> None:  # fmt: skip
        self.task, self.base_url, self.model, self.warm = task, base_url, model, warm
        self.num_entities, self.model_label = num_entities, model_label

    async def prepare(self) -> None:
        """Before a run: a page waiting for each agent it may have (`WarmBrowsers.refill`),
        as a browser pool serving swarms keeps them, so no run's clock includes opening one."""
        await self.warm.refill()

    def coordinator(self, mode: str, sink: TraceSink, *, run_id: str | None = None, stream_text: bool = False) -> Coordinator:
        request = RunRequest(
            prompt=self.task.prompt(), mode=mode, limits=demo_limits(self.num_entities, mode),  # type: ignore[arg-type]
            system_prompt=ORCHESTRATOR_PROMPT if mode == "swarm" else SINGLE_PROMPT,
            model_label=self.model_label, config_json="{}",
        )  # fmt: skip
        kits = [FixtureWebKit(self.base_url, warm=self.warm)]
        return Coordinator(request, self.model, kits, sink, run_id=run_id, stream_text=stream_text)

    @asynccontextmanager
    async def open_run(self, mode: str, sink: TraceSink, run_id: str, *, stream_text: bool = True) -> AsyncIterator[Coordinator]:
        """`prepare`, then `coordinator` as an async context manager (the TUI's `LiveRun`
        opener); the model outlives it, the session closes it."""
        await self.prepare()
        yield self.coordinator(mode, sink, run_id=run_id, stream_text=stream_text)


@asynccontextmanager
async def demo_session(*, seed: int, num_entities: int, model: ChatModel, model_label: str = "local:demo",
                       close_model: bool = True, web_latency_s: float = 0.0) -> AsyncIterator[DemoSession]:  # fmt: skip
    """Serves the world of `seed` on loopback and keeps Chromium open for it while open;
    `model` is closed on exit (once, after every run) unless `close_model` is False (a
    benchmark reuses it). `web_latency_s`: the site answers each request that much later,
    as a remote one would (simulated; 0: loopback as it is)."""
    if not 1 <= num_entities <= MAX_ENTITIES:
        raise ValueError(f"--entities must be between 1 and {MAX_ENTITIES}")
    world, task = seeded_task(seed, num_entities)
    retrying = RetryingModel(model, policy=RetryPolicy(), limiter=AdaptiveLimiter(17))
    web = FixtureWebServer(world, latency_s=web_latency_s).start()
    try:
        # A page for every agent of a swarm run: the orchestrator's (its kit opens one too) and one per entity.
        async with WarmBrowsers([web.base_url], spare_pages=num_entities + 1) as warm:
            yield DemoSession(task, web.base_url, retrying, warm, num_entities=num_entities, model_label=model_label)
    finally:
        with anyio.CancelScope(shield=True):
            if close_model:
                await retrying.aclose()
            await anyio.to_thread.run_sync(web.stop)  # joins the server thread (up to its 0.5 s poll)


def demo_result(store: TraceStore, task: WideTask, run_ids: dict[str, str], *, web_latency_s: float = 0.0) -> dict[str, Any]:
    """The first run's JSON with the demo's figures added: each run's accuracy against the
    ground truth and, with both modes, the single-agent run's figures and the speedup;
    `web_latency_s`, the site's simulated latency the runs had."""
    summaries: dict[str, dict[str, Any]] = {}
    for mode, run_id in run_ids.items():
        summary = run_summary(store, run_id)
        summaries[mode] = summary | {"accuracy": _accuracy(task, summary.get("final_answer"))}
    result = dict(summaries.get("swarm") or next(iter(summaries.values())))
    if "swarm" in run_ids:
        result["subagent_accuracy"] = subagent_accuracy(store, task, run_ids["swarm"])
    if "single" in summaries and "swarm" in summaries:
        single = summaries["single"]
        result["single_agent"] = {key: single[key] for key in ("run_id", "status", "final_answer", "accuracy", "wall_time_s",
                                                               "critical_steps", "num_tool_calls", "usage")}  # fmt: skip
        result["speedup"] = round(single["wall_time_s"] / max(result["wall_time_s"], 1e-9), 2)
    result["web_latency_s"] = web_latency_s
    result["ground_truth"] = task.ground_truth()
    result["task"] = task.prompt()
    result["db"] = str(store.path)
    return result


def subagent_accuracy(store: TraceStore, task: WideTask, run_id: str) -> float:
    """Item accuracy of a swarm run's sub-agents' own answers (each a row of the table),
    taken together: what the orchestrator had to copy into its table. Against the run's
    `accuracy`, it tells the sub-agents' reading from the orchestrator's assigning and copying."""
    answers = [agent.final_answer or "" for agent in store.agents(run_id) if agent.role == "subagent"]
    return _accuracy(task, "\n".join(answers))


def _accuracy(task: WideTask, answer: str | None) -> float:
    num_right, num_items = item_accuracy(task, answer)
    return round(num_right / num_items, 4)


def run_demo(*, seed: int, num_entities: int, model: ChatModel, store: TraceStore, model_label: str = "local:demo",
             modes: tuple[str, ...] = ("swarm", "single"), extra_sinks: list[TraceSink] | None = None,
             close_model: bool = True, web_latency_s: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Runs the modes in order; returns `demo_result` of them.
    `model` is closed after unless `close_model` is False (a benchmark reuses it);
    `web_latency_s` as `demo_session` takes it."""
    run_ids: dict[str, str] = {}
    sessions: list[DemoSession] = []
    with Recorder(store) as recorder:
        sink = FanOut([recorder, *(extra_sinks or [])])

        async def main() -> None:
            async with demo_session(seed=seed, num_entities=num_entities, model=model, model_label=model_label,
                                    close_model=close_model, web_latency_s=web_latency_s) as session:  # fmt: skip
                sessions.append(session)
                for mode in modes:
                    await session.prepare()
                    outcome = await session.coordinator(mode, sink).run()
                    run_ids[mode] = outcome.run_id

        anyio.run(main)
        recorder.flush()
    return demo_result(store, sessions[0].task, run_ids, web_latency_s=web_latency_s)


def describe(result: dict[str, Any]) -> str:
    """The human-readable report `swarm demo` prints."""
    lines = [f"task: {result['task']}", "", result.get("final_answer") or "(no answer)", ""]
    read = f" (the sub-agents' answers {result['subagent_accuracy']:.0%})" if "subagent_accuracy" in result else ""
    lines.append(f"swarm:  accuracy {result['accuracy']:.0%}{read}, wall {result['wall_time_s']:.1f} s, "
                 f"critical steps {result['critical_steps']}, status {result['status']}")  # fmt: skip
    single = result.get("single_agent")
    if single:
        lines.append(f"single: accuracy {single['accuracy']:.0%}, wall {single['wall_time_s']:.1f} s, "
                     f"critical steps {single['critical_steps']}, status {single['status']}")  # fmt: skip
        lines.append(f"speedup: {result['speedup']}x wall time")
    if result.get("web_latency_s"):
        lines.append(f"web: simulated latency, the site answered each request {result['web_latency_s']} s late")
    lines.append(f"trace: swarm runs show {result['run_id']} --db {result['db']}")
    return "\n".join(lines)
