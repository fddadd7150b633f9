"""Reading runs from the trace database: the runs list, and one run polled for new rows.

The database is in WAL mode, so these reads never block a writer in another process
(`swarm run` in another terminal). `RunPoller.fetch` reads only what is new since its last
call (rows past a rowid/id mark, plus the few rows still running), so polling a run with
15,000 tool calls every half second stays cheap. `fetch` is blocking: call it from a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, literal_column
from sqlmodel import Session, select

from storage.models import AgentRow, MessageRow, ModelCallRow, RunRow, ToolCallRow
from storage.store import TraceStore
from tui.run_model import RunModel

_MAX_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class RunSummary:
    """One line of the runs list."""

    id: str
    prompt: str
    status: str
    num_agents: int
    num_tool_calls: int
    critical_steps: int | None  # None while running (known at the end)
    num_tokens: int
    started_at: float
    wall_time_s: float | None


def list_run_summaries(store: TraceStore, limit: int = 200) -> list[RunSummary]:
    """Newest first; running runs get live counts from their agent and tool-call rows."""
    summaries = []
    rows = store.list_runs(limit)
    with Session(store.engine) as session:
        for row in rows:
            if row.status != "running":
                summaries.append(RunSummary(
                    row.id, row.prompt, row.status, row.num_agents, row.num_tool_calls, row.critical_steps,
                    row.input_tokens + row.output_tokens, row.started_at, row.wall_time_s,
                ))
                continue
            num_agents = session.exec(select(func.count()).select_from(AgentRow).where(AgentRow.run_id == row.id)).one()
            num_calls = session.exec(select(func.count()).select_from(ToolCallRow).where(ToolCallRow.run_id == row.id)).one()
            tokens = session.exec(
                select(func.coalesce(func.sum(ModelCallRow.input_tokens + ModelCallRow.output_tokens), 0))
                .where(ModelCallRow.run_id == row.id)
            ).one()
            summaries.append(RunSummary(
                row.id, row.prompt, row.status, num_agents, num_calls, None, int(tokens), row.started_at, None,
            ))
    return summaries


@dataclass
class PollResult:
    run: RunRow | None = None
    agents: list[AgentRow] = field(default_factory=list)
    model_calls: list[ModelCallRow] = field(default_factory=list)
    messages: list[MessageRow] = field(default_factory=list)
    tool_calls: list[ToolCallRow] = field(default_factory=list)


class RunPoller:
    """Reads one run's rows incrementally; `apply` feeds them to a `RunModel`."""

    def __init__(self, store: TraceStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.is_finished = False
        self._agent_mark = 0
        self._call_mark = 0
        self._message_mark = 0
        self._model_call_mark = 0
        # Rows still running are read again each time (rows past the marks are new ones).
        self._running_agents: set[str] = set()
        self._running_calls: set[str] = set()
        self._is_first = True

    def fetch(self) -> PollResult:
        """Rows new or changed since the last fetch (all of them the first time)."""
        result = PollResult()
        with Session(self.store.engine) as session:
            result.run = session.get(RunRow, self.run_id)
            is_finished = result.run is not None and result.run.status != "running"
            result.agents, self._agent_mark = self._new_and_running(session, AgentRow, self._agent_mark, self._running_agents)
            result.tool_calls, self._call_mark = self._new_and_running(session, ToolCallRow, self._call_mark, self._running_calls)
            result.messages = list(session.exec(
                select(MessageRow).where(self._of_run(MessageRow, self._message_mark), MessageRow.id > self._message_mark)  # type: ignore[operator]
                .order_by(MessageRow.id)
            ))
            if result.messages:
                self._message_mark = result.messages[-1].id or self._message_mark
            if not (is_finished and self._is_first):  # a finished run's totals are stored
                result.model_calls = list(session.exec(
                    select(ModelCallRow)
                    .where(self._of_run(ModelCallRow, self._model_call_mark), ModelCallRow.id > self._model_call_mark)  # type: ignore[operator]
                    .order_by(ModelCallRow.id)
                ))
                if result.model_calls:
                    self._model_call_mark = result.model_calls[-1].id or self._model_call_mark
        self._is_first = False
        self.is_finished = is_finished
        return result

    def _of_run(self, table: type[Any], mark: int) -> Any:
        """`run_id = ?`; past the first read, written `+run_id` so that SQLite walks the rowid
        range past `mark` (a few new rows) instead of the run's index (every row of the run)."""
        if mark == 0:
            return table.run_id == self.run_id
        return literal_column(f"+{table.__tablename__}.run_id") == self.run_id

    def _new_and_running(self, session: Session, table: type[Any], mark: int, running: set[str]) -> tuple[list[Any], int]:
        """Rows past `mark`, and the rows in `running` again; updates `running` in place."""
        rowid = literal_column("rowid")
        pairs = list(session.exec(select(table, rowid).where(self._of_run(table, mark), rowid > mark)))
        ids = sorted(running)
        for start in range(0, len(ids), _MAX_IDS_PER_QUERY):
            chunk = ids[start : start + _MAX_IDS_PER_QUERY]
            pairs.extend(session.exec(select(table, rowid).where(table.id.in_(chunk))))
        rows = []
        for row, row_mark in pairs:
            rows.append(row)
            mark = max(mark, row_mark)
            if row.status == "running":
                running.add(row.id)
            else:
                running.discard(row.id)
        return rows, mark

    @staticmethod
    def apply(model: RunModel, result: PollResult) -> None:
        """Feeds fetched rows to the model, parents before children (runs on the UI thread)."""
        for _ in RunPoller.apply_in_steps(model, result):
            pass

    @staticmethod
    def apply_in_steps(model: RunModel, result: PollResult, rows_per_step: int = 2000) -> Iterator[None]:
        """`apply`, pausing (yielding) every `rows_per_step` rows, so that the first read of
        a huge run doesn't hold the UI for its whole length."""
        if result.run is not None:
            model.apply_run_row(result.run)
        steps: list[tuple[Callable[[Any], None], list[Any]]] = [
            (model.apply_agent_row, result.agents),
            (model.apply_model_call_row, result.model_calls),
            (model.apply_message_row, result.messages),
            (model.apply_tool_call_row, result.tool_calls),
        ]
        count = 0
        for apply_row, rows in steps:
            for row in rows:
                apply_row(row)
                count += 1
                if count % rows_per_step == 0:
                    yield
