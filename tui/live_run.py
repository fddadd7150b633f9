"""A run started inside the TUI: its coordinator, its recorder, and a sink the screen drains.

`BufferSink.emit` only appends to a deque (thread-safe, never blocks the swarm); the run
screen drains the buffer into the run's `RunModel` once per frame. The run is recorded to
the same SQLite database as `swarm run` records it, so it appears in the runs list and
can be reopened later like any other run. What it runs comes from an opener: by default
`plan_opener` (a `RunPlan`'s kits and model, as `swarm run` builds them); a front end with
its own set-up (the demo) passes its own.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

from storage.errors import StorageError
from storage.store import TraceStore
from swarm.coordinator import Coordinator, RunOutcome
from swarm.events import Event, FanOut, TraceSink
from swarm.launch import RunPlan, build_kits, open_coordinator
from swarm.recorder import Recorder
from tui.run_model import RunModel


class BufferSink:
    """A `TraceSink` that keeps events until `drain` feeds them to a model."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def drain(self, model: RunModel) -> int:
        """Applies every buffered event to `model`; returns how many."""
        events, count = self._events, 0
        while events:
            model.apply(events.popleft())
            count += 1
        return count


CoordinatorOpener = Callable[[TraceSink, str], AbstractAsyncContextManager[Coordinator]]
"""Given the run's sink and run id, an async context manager that yields its coordinator."""


def plan_opener(plan: RunPlan, workdir: Path) -> CoordinatorOpener:
    """Opens `plan`'s coordinator: its kits working under `workdir / run_id`, its model closed after."""

    def open_(sink: TraceSink, run_id: str) -> AbstractAsyncContextManager[Coordinator]:
        kits = build_kits(plan, workdir / run_id)
        return open_coordinator(plan, kits, sink, run_id=run_id, stream_text=True)

    return open_


class LiveRun:
    """One run the TUI started; `start` runs it to the end (call it from a worker).
    Either `plan` or `opener` says what runs; `secrets` are kept out of the trace."""

    def __init__(
        self,
        plan: RunPlan | None,
        store: TraceStore,
        *,
        run_id: str | None = None,
        opener: CoordinatorOpener | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        if plan is not None and opener is None:
            opener = plan_opener(plan, store.path.parent / "work")
        elif plan is not None or opener is None:
            raise ValueError("LiveRun takes a plan or an opener, not both or neither")
        self.plan = plan
        self.store = store
        self.opener = opener
        self.secrets = plan.secrets if plan is not None else secrets
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.model = RunModel(self.run_id)
        self.sink = BufferSink()
        self.coordinator: Coordinator | None = None
        self.outcome: RunOutcome | None = None
        self.error: str | None = None
        self._cancel_reason: str | None = None

    @property
    def is_running(self) -> bool:
        return self.outcome is None and self.error is None

    async def start(self) -> RunOutcome | None:
        recorder = Recorder(self.store, secrets=self.secrets)
        recorder.__enter__()
        try:
            sink = FanOut([recorder, self.sink])
            async with self.opener(sink, self.run_id) as coordinator:
                self.coordinator = coordinator
                if self._cancel_reason is not None:
                    coordinator.cancel(self._cancel_reason)
                self.outcome = await coordinator.run()
        except Exception as exc:  # shown in the run view; the recorder keeps what was written
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(recorder.close)
                except StorageError as exc:
                    self.error = self.error or str(exc)
        if self.error is not None:
            self.model.fail(self.error)
        return self.outcome

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Cancels the whole run."""
        if self.coordinator is None:
            self._cancel_reason = reason
        else:
            self.coordinator.cancel(reason)

    def cancel_agent(self, agent_id: str, reason: str = "cancelled by user") -> bool:
        """Cancels one sub-agent; False when it is not running."""
        return self.coordinator is not None and self.coordinator.cancel_agent(agent_id, reason)
