"""`swarm demo --tui`: the demo as a job of the TUI, so a person watches it run.

`DemoJob` opens the same `demo_session` as `run_demo` (world, loopback site, model) and
starts each mode as a `LiveRun` through `SwarmApp.run_live`: the swarm run's view opens at
once, the single-agent baseline's opens over it when the swarm run ends. Both are recorded
to the app's database like `swarm demo` records them. When both have succeeded or failed,
`describe(result)` appears as a notification and is kept in `result` for the caller to
print after the TUI closes. A cancelled run (`c`, or quitting) stops the demo there; the
model is closed once, after the last run, whatever happened.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio

from demo.run import demo_result, demo_session, describe
from swarm.model import ChatModel
from tui.app import SwarmApp
from tui.live_run import LiveRun

NOTICE_TIMEOUT_S = 600.0


class DemoJob:
    """The demo's runs, for `SwarmApp(store, job=DemoJob(...))`; `result` once both ended."""

    def __init__(self, *, seed: int, num_entities: int, model: ChatModel, model_label: str = "local:demo",
                 modes: tuple[str, ...] = ("swarm", "single"), web_latency_s: float = 0.0) -> None:  # fmt: skip
        self.seed, self.num_entities, self.model = seed, num_entities, model
        self.web_latency_s = web_latency_s
        self.model_label, self.modes = model_label, modes
        self.run_ids: dict[str, str] = {}
        self.result: dict[str, Any] | None = None

    async def __call__(self, app: SwarmApp) -> None:
        app.notify("demo: starting the fixture site and Chromium", timeout=5)
        async with demo_session(seed=self.seed, num_entities=self.num_entities, model=self.model,
                                model_label=self.model_label, web_latency_s=self.web_latency_s) as session:  # fmt: skip
            for mode in self.modes:
                live = LiveRun(None, app.store, opener=partial(session.open_run, mode))
                outcome = await app.run_live(live)
                if outcome is None or outcome.status == "cancelled":
                    return  # the TUI is closing, the run broke, or the person stopped it
                self.run_ids[mode] = outcome.run_id
        self.result = await anyio.to_thread.run_sync(partial(demo_result, web_latency_s=self.web_latency_s), app.store, session.task, self.run_ids)
        app.notify(describe(self.result), title="demo finished", timeout=NOTICE_TIMEOUT_S, markup=False)

