"""The trace database on a real file: WAL mode, batched writes, reads, prefix lookup."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from storage.errors import RunNotFound, StorageError
from storage.models import AgentRow, RunRow, ToolCallRow
from storage.store import TraceStore, WriteBatch, default_db_path


def test_database_is_created_with_its_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "traces.db"
    TraceStore(path)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_batch_inserts_parents_first_and_applies_updates_after(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    batch = WriteBatch()
    now = time.time()
    # children queued before their parent: the batch still inserts the run first
    batch.insert(ToolCallRow, id="c1", run_id="r1", agent_id="a1", step=1, call_id="functions.echo:0", tool="echo", arguments="{}", started_at=now)
    batch.insert(AgentRow, id="a1", run_id="r1", name="orchestrator", role="orchestrator", started_at=now)
    batch.insert(RunRow, id="r1", prompt="p", mode="swarm", model="m", started_at=now)
    batch.update(ToolCallRow, "c1", status="ok", result="done", duration_s=0.5)
    batch.update(RunRow, "r1", status="succeeded")
    store.write(batch)
    assert store.get_run("r1").status == "succeeded"
    assert [(c.status, c.result) for c in store.tool_calls("r1")] == [("ok", "done")]


def test_a_failed_batch_writes_nothing(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    batch = WriteBatch()
    batch.insert(RunRow, id="r1", prompt="p", mode="swarm", model="m", started_at=1.0)
    batch.insert(AgentRow, id="a1", run_id="missing-run", name="x", role="subagent", started_at=1.0)
    with pytest.raises(StorageError):
        store.write(batch)
    assert store.list_runs() == []


def test_runs_are_found_by_unique_prefix_and_listed_newest_first(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    batch = WriteBatch()
    for run_id, started in [("abc1", 1.0), ("abd2", 2.0), ("xyz3", 3.0)]:
        batch.insert(RunRow, id=run_id, prompt="p", mode="swarm", model="m", started_at=started)
    store.write(batch)
    assert [r.id for r in store.list_runs()] == ["xyz3", "abd2", "abc1"]
    assert store.get_run("xy").id == "xyz3"
    with pytest.raises(RunNotFound, match="ambiguous"):
        store.get_run("ab")
    with pytest.raises(RunNotFound, match="no run"):
        store.get_run("q")


def test_unusable_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot open trace database"):
        TraceStore(tmp_path / "file" / "traces.db")


def test_default_path_follows_swarm_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "traces.db"
    monkeypatch.delenv("SWARM_HOME")
    assert default_db_path() == Path.home() / ".swarm" / "traces.db"


def test_updates_fold_into_same_batch_inserts_and_group_by_fields(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    first = WriteBatch()
    first.insert(RunRow, id="r1", prompt="p", mode="swarm", model="m", started_at=1.0)
    for i in range(3):
        first.insert(ToolCallRow, id=f"c{i}", run_id="r1", agent_id="a", step=1, call_id="x", tool="echo", arguments="{}", started_at=1.0)
    first.update(ToolCallRow, "c0", status="ok", result="folded", duration_s=0.1)
    assert first.updates == []  # folded into the insert
    store.write(first)
    second = WriteBatch()
    second.update(ToolCallRow, "c1", status="ok", result="one", duration_s=0.1)
    second.update(ToolCallRow, "c2", status="error", result=None, duration_s=0.2)
    second.update(ToolCallRow, "c1", status="ok", result="one, again", duration_s=0.3)  # later wins
    store.write(second)
    rows = {c.id: (c.status, c.result) for c in store.tool_calls("r1")}
    assert rows == {"c0": ("ok", "folded"), "c1": ("ok", "one, again"), "c2": ("error", None)}


def test_columns_left_out_get_the_models_defaults_and_bad_rows_are_refused(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    batch = WriteBatch()
    batch.insert(RunRow, id="r1", prompt="p", mode="swarm", model="m", started_at=1.0)
    batch.insert(ToolCallRow, id="c1", run_id="r1", agent_id="a1", step=1, call_id="x:0", tool="echo", arguments="{}", started_at=1.0)
    store.write(batch)
    run = store.get_run("r1")
    assert (run.status, run.config_json, run.num_tool_calls, run.finished_at) == ("running", "{}", 0, None)
    assert [(c.status, c.attempt, c.result) for c in store.tool_calls("r1")] == [("running", 1, None)]
    missing_prompt = WriteBatch()
    missing_prompt.insert(RunRow, id="r2", mode="swarm", model="m", started_at=1.0)
    with pytest.raises(StorageError, match="NOT NULL"):
        store.write(missing_prompt)
    no_such_column = WriteBatch()
    no_such_column.update(RunRow, "r1", colour="red")
    with pytest.raises(StorageError, match="no column 'colour'"):
        store.write(no_such_column)
    assert store.get_run("r1").status == "running"
