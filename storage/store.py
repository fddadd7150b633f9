"""`TraceStore`: the trace database, opened on a file in WAL mode.

Writes come in batches (`WriteBatch`): each batch is one transaction of bulk inserts
then updates, so a writer can keep up with thousands of events per second and a process
killed mid-run loses nothing already committed. Reads use short sessions and never block
the writer (WAL). Not thread-safe for writes: one writer per database at a time.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine, select

from storage.errors import RunNotFound, StorageError
from storage.models import AgentRow, MessageRow, ModelCallRow, RunRow, ToolCallRow

# Parents before children, so that one batch can insert a run and its agents.
_INSERT_ORDER: tuple[type[SQLModel], ...] = (RunRow, AgentRow, MessageRow, ModelCallRow, ToolCallRow)


def default_db_path() -> Path:
    """`$SWARM_HOME/traces.db`, `SWARM_HOME` defaulting to `~/.swarm`."""
    home = os.environ.get("SWARM_HOME") or str(Path.home() / ".swarm")
    return Path(home) / "traces.db"


@dataclass
class WriteBatch:
    """Rows to insert and fields to update, applied in one transaction.

    An update of a row inserted in the same batch is folded into the insert, so a short
    tool call costs one row write, not an insert and an update.
    """

    inserts: dict[type[SQLModel], list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    updates: list[tuple[type[SQLModel], Any, dict[str, Any]]] = field(default_factory=list)
    _pending: dict[tuple[type[SQLModel], Any], dict[str, Any]] = field(default_factory=dict)

    def insert(self, table: type[SQLModel], **values: Any) -> None:
        self.inserts[table].append(values)
        if "id" in values:
            self._pending[(table, values["id"])] = values

    def update(self, table: type[SQLModel], key: Any, **values: Any) -> None:
        pending = self._pending.get((table, key))
        if pending is not None:
            pending.update(values)
        else:
            self.updates.append((table, key, values))

    def __bool__(self) -> bool:
        return bool(self.updates) or any(self.inserts.values())


@dataclass(frozen=True)
class _TableSql:
    insert: str
    columns: tuple[str, ...]
    defaults: dict[str, Any]  # a column left out of a row gets its model default (or NULL)


@cache
def _sql_of(table: type[SQLModel]) -> _TableSql:
    columns = tuple(column.name for column in table.__table__.columns)  # type: ignore[attr-defined]
    defaults: dict[str, Any] = {}
    for column in table.__table__.columns:  # type: ignore[attr-defined]
        if column.default is not None:
            if not column.default.is_scalar:
                raise TypeError(f"{table.__name__}.{column.name}: only constant defaults are supported")
            defaults[column.name] = column.default.arg
    insert = f"INSERT INTO {table.__tablename__} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    return _TableSql(insert, columns, defaults)


def _column(table: type[SQLModel], name: str) -> str:
    if name not in _sql_of(table).columns:
        raise StorageError(f"{table.__tablename__} has no column {name!r}")
    return name


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives the process being killed
    # (only an OS crash or power loss can drop the last commits).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class TraceStore:
    """The trace database at `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                f"sqlite:///{self.path}", connect_args={"check_same_thread": False}
            )
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
            self._create_tables()
        except (OSError, SQLAlchemyError) as exc:
            raise StorageError(f"cannot open trace database {self.path}: {exc}") from exc

    def _create_tables(self) -> None:
        # Another process (a TUI, a second run) may create the tables between SQLAlchemy's
        # check and its CREATE; the loser of that race sees "already exists" and checks again.
        for attempt in range(5):
            try:
                SQLModel.metadata.create_all(self.engine)
                return
            except OperationalError as exc:
                if "already exists" not in str(exc) or attempt == 4:
                    raise

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ---------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Applies the batch in one transaction: inserts by table, then updates in order.

        The rows go to sqlite3's `executemany` as plain tuples, past SQLAlchemy's statement
        and type layers: those cost the writer thread (which shares the interpreter lock
        with the swarm's event loop) several times what sqlite3 itself does per row. Every
        column is a str, int, float or NULL, which sqlite3 binds as is.
        """
        if not batch:
            return
        try:
            with self.engine.begin() as conn:
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    for table in _INSERT_ORDER:
                        rows = batch.inserts.get(table)
                        if rows:
                            sql = _sql_of(table)
                            defaults = sql.defaults
                            cursor.executemany(
                                sql.insert, [tuple(row.get(name, defaults.get(name)) for name in sql.columns) for row in rows]
                            )
                    # Consecutive updates of the same table and fields go as one executemany;
                    # grouping only neighbours keeps the order of updates to any one row.
                    for (table, names), group in groupby(batch.updates, key=lambda u: (u[0], tuple(u[2]))):
                        assignments = ", ".join(f"{_column(table, name)} = ?" for name in names)
                        cursor.executemany(
                            f"UPDATE {table.__tablename__} SET {assignments} WHERE id = ?",
                            [(*values.values(), key) for _, key, values in group],
                        )
                finally:
                    cursor.close()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise StorageError(f"cannot write to trace database {self.path}: {exc}") from exc

    # -- reading ---------------------------------------------------------------

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        with Session(self.engine) as session:
            query = select(RunRow).order_by(RunRow.started_at.desc()).limit(limit)  # type: ignore[attr-defined]
            return list(session.exec(query))

    def get_run(self, run_id: str) -> RunRow:
        """The run with this id, or the one run whose id starts with it."""
        with Session(self.engine) as session:
            row = session.get(RunRow, run_id)
            if row is not None:
                return row
            matches = list(
                session.exec(select(RunRow).where(RunRow.id.startswith(run_id)).limit(2))  # type: ignore[union-attr]
            )
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFound(f"no run with id {run_id!r} in {self.path}")
        raise RunNotFound(f"run id prefix {run_id!r} is ambiguous in {self.path}")

    def agents(self, run_id: str) -> list[AgentRow]:
        with Session(self.engine) as session:
            query = select(AgentRow).where(AgentRow.run_id == run_id).order_by(AgentRow.started_at)
            return list(session.exec(query))

    def messages(self, run_id: str, agent_id: str | None = None) -> list[MessageRow]:
        return self._for_run(MessageRow, run_id, agent_id, MessageRow.agent_id, MessageRow.seq)

    def tool_calls(self, run_id: str, agent_id: str | None = None) -> list[ToolCallRow]:
        return self._for_run(ToolCallRow, run_id, agent_id, ToolCallRow.started_at)

    def model_calls(self, run_id: str, agent_id: str | None = None) -> list[ModelCallRow]:
        return self._for_run(ModelCallRow, run_id, agent_id, ModelCallRow.started_at)

    def _for_run(self, table: Any, run_id: str, agent_id: str | None, *order_by: Any) -> list[Any]:
        with Session(self.engine) as session:
            query = select(table).where(table.run_id == run_id)
            if agent_id is not None:
                query = query.where(table.agent_id == agent_id)
            return list(session.exec(query.order_by(*order_by)))

    def rows(self, table: type[SQLModel], run_id: str) -> Sequence[SQLModel]:
        """Every row of `table` for the run, in insertion order (for exports and tests)."""
        with Session(self.engine) as session:
            return list(session.exec(select(table).where(table.run_id == run_id)))  # type: ignore[attr-defined]
