"""`Recorder`: the sink that persists a run's events into the trace database.

`emit` only queues; one writer thread drains the queue in batches, each batch one
transaction, so the event loop never waits on disk and a killed process keeps everything
committed before it. A batch gathers events for up to `_LINGER_S` after its first one
(a flush or the stop ends it at once): a big swarm emits thousands of events a second,
and a transaction per handful of them cost the writer about 60 us of CPU per event
against 10 us in batches of hundreds. Known secret values (API keys) are replaced by
`[REDACTED]` in every text before it is written: secrets never reach the database.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterable
from types import TracebackType

from storage.errors import StorageError
from storage.models import AgentRow, MessageRow, ModelCallRow, RunRow, ToolCallRow
from storage.store import TraceStore, WriteBatch
from swarm.events import (
    AgentFinished,
    AgentStarted,
    Event,
    MessageAdded,
    ModelCallFinished,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)

_MAX_BATCH = 5000
_LINGER_S = 0.02
_FLUSH = object()
_STOP = object()


def _ends_batch(item: object) -> bool:
    """A flush or the stop is written at once, without waiting for more events."""
    return item is _STOP or (isinstance(item, tuple) and item[0] is _FLUSH)


class Recorder:
    """Writes events to `store` from its own thread; use as a context manager."""

    def __init__(self, store: TraceStore, *, secrets: Iterable[str] = ()) -> None:
        self.store = store
        # Longest first, so a secret that contains another is redacted whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._error: BaseException | None = None
        self._started = False

    def __enter__(self) -> Recorder:
        self._thread.start()
        self._started = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def emit(self, event: Event) -> None:
        if not isinstance(event, TextDelta):  # live-only events are not stored
            self._queue.put(event)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Blocks until every event emitted so far is committed; raises the writer's error."""
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        if self._started and not done.wait(timeout_s):
            raise StorageError(f"trace writer did not flush within {timeout_s:.0f}s")
        self._raise_error()

    def close(self) -> None:
        if self._started and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise StorageError(f"traces could not be written: {error}") from error

    # -- the writer thread -------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            deadline = time.monotonic() + _LINGER_S
            while len(items) < _MAX_BATCH and not _ends_batch(items[-1]):
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            batch = WriteBatch()
            flushes: list[threading.Event] = []
            for item in items:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, tuple) and item[0] is _FLUSH:
                    flushes.append(item[1])
                elif self._error is None:
                    self._add(batch, item)  # type: ignore[arg-type]
            if self._error is None:
                try:
                    self.store.write(batch)
                except Exception as exc:  # kept, and raised to the caller on flush/close
                    self._error = exc
            for done in flushes:
                done.set()

    def _scrub(self, text: str | None) -> str | None:
        if text is None or not self._secrets:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def _add(self, batch: WriteBatch, event: Event) -> None:
        s = self._scrub
        if isinstance(event, RunStarted):
            batch.insert(
                RunRow, id=event.run_id, prompt=s(event.prompt), mode=event.mode,
                model=s(event.model), model_name=event.model_name,
                config_json=s(event.config_json), started_at=event.at,
            )
        elif isinstance(event, AgentStarted):
            batch.insert(
                AgentRow, id=event.agent_id, run_id=event.run_id, parent_id=event.parent_id,
                name=event.name, role=event.role, task=s(event.task),
                system_prompt=s(event.system_prompt), launched_at_step=event.launched_at_step,
                started_at=event.at,
            )
        elif isinstance(event, MessageAdded):
            message = event.message
            calls = (
                json.dumps([{"id": c.id, "name": c.name, "arguments": s(c.arguments)} for c in message.tool_calls])
                if message.tool_calls
                else None
            )
            batch.insert(
                MessageRow, run_id=event.run_id, agent_id=event.agent_id, seq=event.seq,
                role=message.role, content=s(message.content), reasoning=s(message.reasoning),
                tool_calls_json=calls, tool_call_id=message.tool_call_id, name=message.name,
                created_at=event.at,
            )
        elif isinstance(event, ModelCallFinished):
            batch.insert(
                ModelCallRow, run_id=event.run_id, agent_id=event.agent_id, step=event.step,
                attempt=event.attempt, model=event.model, status=event.status,
                error=s(event.error), finish_reason=event.finish_reason,
                input_tokens=event.usage.input_tokens, output_tokens=event.usage.output_tokens,
                latency_s=event.latency_s, ttft_s=event.ttft_s, started_at=event.started_at,
            )
        elif isinstance(event, ToolCallStarted):
            batch.insert(
                ToolCallRow, id=event.record_id, run_id=event.run_id, agent_id=event.agent_id,
                step=event.step, call_id=event.call_id, tool=event.tool,
                arguments=s(event.arguments), started_at=event.at,
            )
        elif isinstance(event, ToolCallFinished):
            batch.update(
                ToolCallRow, event.record_id, status=event.status, result=s(event.result),
                error=s(event.error), duration_s=event.duration_s,
            )
        elif isinstance(event, AgentFinished):
            batch.update(
                AgentRow, event.agent_id, status=event.status, stop_reason=s(event.stop_reason),
                final_answer=s(event.final_answer), steps=event.steps,
                num_tool_calls=event.num_tool_calls, input_tokens=event.usage.input_tokens,
                output_tokens=event.usage.output_tokens, finished_at=event.at,
            )
        elif isinstance(event, RunFinished):
            batch.update(
                RunRow, event.run_id, status=event.status, stop_reason=s(event.stop_reason),
                final_answer=s(event.final_answer), num_agents=event.num_agents,
                num_tool_calls=event.num_tool_calls, critical_steps=event.critical_steps,
                input_tokens=event.usage.input_tokens, output_tokens=event.usage.output_tokens,
                finished_at=event.at, wall_time_s=event.wall_time_s,
            )
