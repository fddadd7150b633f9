"""`SwarmApp`: the terminal UI. Opens on the runs list; runs are started and watched here.

The app is the one place that turns screens' messages into navigation and runs: it opens
run views, shows the new-run form, and starts each new run in a worker (`LiveRun`),
recording to the same database as `swarm run`. A front end may hand it a `job` to run at
mount (`swarm demo --tui` runs its two runs from one, through `run_live`). Imports no
torch (nor anything that does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker

from storage.store import TraceStore
from swarm.coordinator import RunOutcome
from swarm.launch import RunPlan
from tui.db_source import RunPoller
from tui.gc_tuning import tuned_gc
from tui.live_run import LiveRun
from tui.run_model import RunModel
from tui.screens.new_run import NewRunScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen

_QUIT_GRACE_S = 5.0
_BACKGROUND_DRAIN_S = 0.25


Job = Callable[["SwarmApp"], Awaitable[None]]
"""Work a front end gives the app to do at mount, in a worker; it starts runs with `run_live`."""


class SwarmApp(App[None]):
    """`swarm tui`: `plan`, when given, starts at once (`swarm tui TASK.toml`); so does `job`."""

    TITLE = "swarm"
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        store: TraceStore,
        *,
        plan: RunPlan | None = None,
        default_model: str | None = None,
        default_model_name: str | None = None,
        job: Job | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.initial_plan = plan
        self.job = job
        self.is_closing = False
        self._job_worker: Worker[None] | None = None
        self.default_model = default_model
        self.default_model_name = default_model_name
        self.live_runs: dict[str, LiveRun] = {}

    def run(self, *args: Any, **kwargs: Any) -> None:
        """Runs the app, with the collector tuned for big runs (see `tui.gc_tuning`)."""
        with tuned_gc():
            return super().run(*args, **kwargs)

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.store))
        if self.initial_plan is not None:
            self.start_run(self.initial_plan)
        if self.job is not None:
            self._job_worker = self._run_job(self.job)
        self.set_interval(_BACKGROUND_DRAIN_S, self._drain_live_runs)

    def _drain_live_runs(self) -> None:
        """Keeps the models of live runs no screen shows current, so events don't pile up."""
        for live in self.live_runs.values():
            live.sink.drain(live.model)

    # -- runs -------------------------------------------------------------------------

    def start_run(self, plan: RunPlan) -> LiveRun:
        """Starts a run in a worker and opens its view."""
        live = LiveRun(plan, self.store)
        self._show_live(live)
        self._start_live_worker(live)
        return live

    async def run_live(self, live: LiveRun) -> RunOutcome | None:
        """Opens `live`'s view and runs it to the end, in the caller's task (a job's);
        None when it errored, or, without starting it, when the app is closing."""
        if self.is_closing:
            return None
        self._show_live(live)
        await self._start_live(live)
        return live.outcome

    def _show_live(self, live: LiveRun) -> None:
        self.live_runs[live.run_id] = live
        self.push_screen(RunScreen(live.model, live=live))

    async def _start_live(self, live: LiveRun) -> None:
        await live.start()
        if live.error:
            self.notify(f"run {live.run_id} failed: {live.error}", severity="error", timeout=10)

    @work(group="live-runs", exit_on_error=False)
    async def _start_live_worker(self, live: LiveRun) -> None:
        await self._start_live(live)

    @work(group="job", exit_on_error=False)
    async def _run_job(self, job: Job) -> None:
        try:
            await job(self)
        except Exception as exc:  # shown, not fatal: the runs it made stay browsable
            self.notify(f"{type(exc).__name__}: {exc}", title="failed", severity="error", timeout=30)

    def open_run(self, run_id: str) -> None:
        live = self.live_runs.get(run_id)
        if live is not None:
            self.push_screen(RunScreen(live.model, live=live))
        else:
            self.push_screen(RunScreen(RunModel(run_id), poller=RunPoller(self.store, run_id)))

    # -- messages from screens --------------------------------------------------------

    def on_runs_screen_open_run(self, message: RunsScreen.OpenRun) -> None:
        self.open_run(message.run_id)

    def on_runs_screen_new_run(self, message: RunsScreen.NewRun) -> None:
        def started(plan: RunPlan | None) -> None:
            if plan is not None:
                self.start_run(plan)

        self.push_screen(NewRunScreen(self.default_model, self.default_model_name), started)

    async def action_quit(self) -> None:
        """Quits; runs started here are cancelled first, so their traces end cleanly, and a
        job starts no more runs and is waited for (it closes what it opened)."""
        self.is_closing = True
        running = [live for live in self.live_runs.values() if live.is_running]
        for live in running:
            live.cancel("cancelled: the TUI was closed")
        with anyio.move_on_after(_QUIT_GRACE_S):
            while any(live.is_running for live in running) or self._is_job_running:
                await anyio.sleep(0.05)
        self.exit()

    @property
    def _is_job_running(self) -> bool:
        return self._job_worker is not None and not self._job_worker.is_finished
