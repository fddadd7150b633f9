"""TUI responsiveness under load: keypress-to-frame latency on a 1,000-agent run.

A synthetic swarm run (`tui.synthetic`: 1,000 sub-agents, 14 tool calls each plus the
orchestrator's 1,000 `assign_task` calls: 15,000 tool calls, ~80,000 events) is fed to
the run view the way a run started in the TUI feeds it: events go into the screen's
`BufferSink`, drained once per frame. The app runs headless at 120x40; every frame the
compositor produces is encoded to terminal output (as a real terminal would be sent) and
timestamped. A keypress (Down in the agent tree) is posted to the app; its latency is the
time until the first frame showing the moved cursor.

    python bench/tui_load.py                      # live feed, then the fully loaded run
    python bench/tui_load.py --agents 200 --calls 10 --keys 30

Phases: `live` presses keys while events stream in at --rate events/s; `loaded` presses
keys after every event was applied. For each key two latencies: until the frame showing
the cursor on the next agent (`cursor`), and until the frame showing that agent's
transcript and tool calls (`panes`, loaded once the cursor rests for 60 ms). The same
run, recorded to SQLite, is also read back the way the run view reads a run started
elsewhere (`RunPoller`). The garbage collector runs with the thresholds `swarm tui` uses
(`--default-gc`: CPython's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual.app import App  # noqa: E402

from storage.store import TraceStore  # noqa: E402
from swarm.recorder import Recorder  # noqa: E402
from tui.db_source import RunPoller  # noqa: E402
from tui.gc_tuning import TUI_GC_THRESHOLDS  # noqa: E402
from tui.live_run import BufferSink  # noqa: E402
from tui.run_model import RunModel  # noqa: E402
from tui.screens.run import RunScreen  # noqa: E402
from tui.synthetic import synthetic_events  # noqa: E402
from tui.widgets.agent_tree import AgentTree  # noqa: E402


class BenchApp(App[None]):
    def __init__(self, model: RunModel, sink: BufferSink) -> None:
        super().__init__()
        self.model, self.sink = model, sink
        self.frames: list[tuple[float, int, str | None]] = []  # (time, tree cursor, agent in the panes)
        self.output_bytes = 0

    def on_mount(self) -> None:
        self.push_screen(RunScreen(self.model, sink=self.sink))

    def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
        super()._display(screen, renderable)
        if renderable is None or not hasattr(renderable, "render_segments"):
            return
        self.output_bytes += len(renderable.render_segments(self.console))  # what a terminal would be sent
        if isinstance(screen, RunScreen):
            self.frames.append((time.perf_counter(), screen.query_one(AgentTree).cursor, screen.shown_agent_id))


async def press_and_wait(app: BenchApp, timeout_s: float = 10.0) -> tuple[float, float]:
    """Posts Down; returns the seconds until a frame shows the cursor one row lower, and
    until a frame shows that agent's transcript and tool calls."""
    tree = app.screen.query_one(AgentTree)
    expected = min(tree.cursor + 1, len(app.model.order) - 1)
    expected_id = app.model.order[expected]
    num_frames = len(app.frames)
    started = time.perf_counter()
    app.post_message(events.Key("down", None))
    cursor_s = None
    while time.perf_counter() - started < timeout_s:
        for at, cursor, shown in app.frames[num_frames:]:
            if cursor_s is None and cursor == expected:
                cursor_s = at - started
            if shown == expected_id:
                assert cursor_s is not None
                return cursor_s, at - started
        await asyncio.sleep(0.0005)
    raise TimeoutError("no frame showed the keypress")


def describe(name: str, latencies: list[tuple[float, float]]) -> str:
    lines = []
    for what, values in (("cursor", [c for c, _ in latencies]), ("panes", [p for _, p in latencies])):
        ms = sorted(x * 1000 for x in values)
        p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
        lines.append(
            f"{name:<7} {what:<7} keys={len(ms):<4} p50={statistics.median(ms):6.1f} ms  "
            f"p95={p95:6.1f} ms  max={ms[-1]:6.1f} ms"
        )
    return "\n".join(lines)


def poll_times(all_events: list, run_id: str) -> tuple[float, float, float]:  # type: ignore[type-arg]
    """Seconds for a `RunPoller` to read the recorded run: first fetch, its apply, a fetch with nothing new."""
    with tempfile.TemporaryDirectory() as folder:
        store = TraceStore(Path(folder) / "traces.db")
        with Recorder(store) as recorder:
            for event in all_events:
                recorder.emit(event)
            recorder.flush()
        poller, model = RunPoller(store, run_id), RunModel(run_id)
        started = time.perf_counter()
        result = poller.fetch()
        fetched = time.perf_counter()
        poller.apply(model, result)
        model.take_changes()
        applied = time.perf_counter()
        poller.fetch()  # the first one after the big read pays for collecting its garbage
        again_started = time.perf_counter()
        poller.fetch()
        again = time.perf_counter() - again_started
        store.close()
    return fetched - started, applied - fetched, again


def apply_rate(all_events: list, run_id: str) -> float:  # type: ignore[type-arg]
    """Events per second a `RunModel` applies, without any drawing."""
    model = RunModel(run_id)
    started = time.perf_counter()
    for event in all_events:
        model.apply(event)
    model.take_changes()
    return len(all_events) / (time.perf_counter() - started)


gc_pauses: list[tuple[float, int]] = []  # (seconds, generation)


def _time_gc(phase: str, info: dict) -> None:  # type: ignore[type-arg]
    if phase == "start":
        _time_gc.started = time.perf_counter()  # type: ignore[attr-defined]
    else:
        gc_pauses.append((time.perf_counter() - _time_gc.started, info["generation"]))  # type: ignore[attr-defined]


async def main(args: argparse.Namespace) -> None:
    gc.callbacks.append(_time_gc)
    if not args.default_gc:
        gc.set_threshold(*TUI_GC_THRESHOLDS)  # as `swarm tui` runs
    print(f"generating a run: {args.agents} sub-agents x {args.calls} tool calls ...", flush=True)

    def all_events() -> list:  # type: ignore[type-arg]
        return list(synthetic_events("bench", num_subagents=args.agents, calls_per_agent=args.calls))

    num_events, num_calls = len(all_events()), args.agents * (args.calls + 1)
    print(f"{num_events} events, {args.agents + 1} agents, {num_calls} tool calls", flush=True)
    print(f"RunModel.apply alone: {apply_rate(all_events(), 'bench'):,.0f} events/s", flush=True)
    if args.db:
        first, apply_s, again = poll_times(all_events(), "bench")
        print(f"database: first poll {first * 1000:.0f} ms (thread) + apply {apply_s * 1000:.0f} ms (UI), "
              f"then a poll with nothing new {again * 1000:.1f} ms", flush=True)
    model, sink = RunModel("bench"), BufferSink()
    app = BenchApp(model, sink)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        # live: events stream in while the person presses keys
        # events are made as they are fed and dropped once applied, as in a real run
        chunk = max(1, int(args.rate * 0.005))
        stream = synthetic_events("bench", num_subagents=args.agents, calls_per_agent=args.calls)
        live = []
        gc.collect()
        feed_started = time.perf_counter()

        async def feed() -> None:
            for i, event in enumerate(stream, 1):
                sink.emit(event)
                if i % chunk == 0:
                    await asyncio.sleep(0.005)

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(0.3)
        while not feeder.done() and len(live) < args.keys:
            live.append(await press_and_wait(app))
            await asyncio.sleep(0.05)
        await feeder
        while len(model.agents) < args.agents + 1 or sink._events:
            await asyncio.sleep(0.01)
        feed_s = time.perf_counter() - feed_started
        await pilot.pause(0.2)
        frames_before = len(app.frames)
        loaded = []
        for _ in range(args.keys):
            loaded.append(await press_and_wait(app))
            await asyncio.sleep(0.05)
        assert len(model.tool_calls) == num_calls, len(model.tool_calls)
        print(f"live feed: {num_events} events in {feed_s:.2f}s ({num_events / feed_s:,.0f} events/s drawn)")
        if live:
            print(describe("live", live))
        print(describe("loaded", loaded))
        print(f"frames: {len(app.frames)} ({len(app.frames) - frames_before} in the loaded phase); "
              f"garbage-collector pauses over 50 ms (ms, generation): {sorted((round(p * 1000), g) for p, g in gc_pauses if p > 0.05)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=14, help="tool calls per sub-agent")
    parser.add_argument("--keys", type=int, default=50, help="keypresses per phase")
    parser.add_argument("--rate", type=float, default=20000, help="events per second in the live phase")
    parser.add_argument("--no-db", dest="db", action="store_false", help="skip timing the database poller")
    parser.add_argument("--default-gc", action="store_true", help="CPython's collector thresholds, not the TUI's")
    asyncio.run(main(parser.parse_args()))
