"""`swarm run` and `swarm runs` as a user runs them: a real process, a real database file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.store import TraceStore
from swarm.testing.fake_openai import FakeOpenAIServer, SwarmBrain

CONTRACT_KEYS = {
    "run_id", "status", "final_answer", "agents", "num_tool_calls", "critical_steps", "wall_time_s", "usage",
}


def swarm(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write_task(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def server():
    with FakeOpenAIServer(SwarmBrain(num_subagents=3, subagent_tool_calls=0)) as server:
        yield server


@pytest.fixture
def task(tmp_path: Path, server: FakeOpenAIServer) -> Path:
    return write_task(
        tmp_path / "task.toml",
        f'[task]\nprompt = "three parts"\n[model]\nspec = "openai:{server.base_url}"\nname = "fake-kimi"\n',
    )


def test_run_json_prints_exactly_one_summary_object(task: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    result = swarm("run", str(task), "--json", "--db", str(db))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one object
    assert CONTRACT_KEYS <= summary.keys()
    assert summary["status"] == "succeeded"
    assert summary["final_answer"].startswith("FINAL")
    assert set(summary["usage"]) == {"input_tokens", "output_tokens"}
    assert {a["role"] for a in summary["agents"]} == {"orchestrator", "subagent"}
    assert all({"id", "name", "parent_id", "role", "status", "steps"} <= a.keys() for a in summary["agents"])

    shown = swarm("runs", "show", summary["run_id"][:6], "--json", "--db", str(db))
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == summary
    listed = swarm("runs", "list", "--db", str(db), env={"COLUMNS": "200"})
    assert summary["run_id"] in listed.stdout


def test_run_without_json_prints_progress_and_the_answer(task: Path, tmp_path: Path) -> None:
    result = swarm("run", str(task), "--db", str(tmp_path / "t.db"))
    assert result.returncode == 0
    assert result.stdout.startswith("FINAL")
    assert "worker" in result.stderr and "succeeded" in result.stderr
    assert "swarm runs show" in result.stderr


def test_flags_override_the_task_file_and_over_budget_exits_1(task: Path, tmp_path: Path) -> None:
    result = swarm("run", str(task), "--json", "--db", str(tmp_path / "t.db"), "--max-tool-calls", "2")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "budget_exceeded"
    assert summary["stop_reason"] == "max_tool_calls (2) reached"


def test_default_database_is_under_swarm_home(task: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = swarm("run", str(task), "--json", env={"SWARM_HOME": str(home)})
    assert result.returncode == 0
    run_id = json.loads(result.stdout)["run_id"]
    assert TraceStore(home / "traces.db").get_run(run_id).status == "succeeded"


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        (None, [], "no such task file"),
        ("[task\nprompt = 1", [], "not valid TOML"),
        ("[model]\nname = 'x'\n", [], "[task]: is required"),
        ("[task]\nprompt = 'x'\nprompts = 'y'\n", [], "[task].prompts: is not a known field"),
        ("[task]\nprompt = 'x'\n[limits]\nmax_concurrency = 0\n", [], "[limits].max_concurrency"),
        ("[task]\nprompt = 'x'\n", ["--max-subagents", "-1"], "--max-subagents"),
        ("[task]\nprompt = 'x'\n", [], "no model"),
        ("[task]\nprompt = 'x'\n", ["--model", "gpt:foo"], "is not one of openai:"),
        ("[task]\nprompt = 'x'\n[tools]\nenabled = ['teleport']\n", ["--model", "openai:http://127.0.0.1:9/v1", "--model-name", "m"], "unknown tool 'teleport'"),
        ("[task]\nprompt = 'x'\n[model]\napi_key_env = 'SWARM_TEST_MISSING_KEY'\n", ["--model", "openai:http://127.0.0.1:9/v1"], "SWARM_TEST_MISSING_KEY is not set"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, text: str | None, args: list[str], expected: str) -> None:
    path = tmp_path / "task.toml"
    if text is not None:
        path.write_text(text)
    result = swarm("run", str(path), "--db", str(tmp_path / "t.db"), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]
    if text is not None and "--" not in expected and "no model" not in expected and "model" not in " ".join(args):
        assert str(path) in lines[0]  # names the file
    assert not list(tmp_path.glob("t.db*")) or text is not None


def test_runs_show_unknown_id_is_bad_input(tmp_path: Path) -> None:
    result = swarm("runs", "show", "nope", "--db", str(tmp_path / "t.db"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: no run with id 'nope'")


def _start_slow_run(tmp_path: Path, server: FakeOpenAIServer) -> tuple[subprocess.Popen[str], Path]:
    task = write_task(
        tmp_path / "slow.toml",
        f'[task]\nprompt = "slow"\n[model]\nspec = "openai:{server.base_url}"\nname = "fake-kimi"\n',
    )
    db = tmp_path / "t.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "swarm", "run", str(task), "--json", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until both sub-agents are running
        if db.exists():
            runs = TraceStore(db).list_runs()
            if runs and len(TraceStore(db).agents(runs[0].id)) == 3:
                return process, db
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the run did not start its sub-agents")


def test_sigint_cancels_cleanly_records_cancelled_and_exits_130(tmp_path: Path) -> None:
    with FakeOpenAIServer(SwarmBrain(tasks=["SLOW a", "SLOW b"], slow_delay_s=60)) as server:
        process, db = _start_slow_run(tmp_path, server)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["status"] == "cancelled"
    assert summary["stop_reason"] == "cancelled by user (SIGINT)"
    assert {a["status"] for a in summary["agents"]} == {"cancelled"}
    store = TraceStore(db)
    assert store.get_run(summary["run_id"]).status == "cancelled"


def test_a_killed_run_keeps_what_was_committed(tmp_path: Path) -> None:
    with FakeOpenAIServer(SwarmBrain(tasks=["SLOW a", "SLOW b"], slow_delay_s=60)) as server:
        process, db = _start_slow_run(tmp_path, server)
        process.kill()
        process.wait(timeout=10)
    store = TraceStore(db)
    run = store.list_runs()[0]
    assert run.status == "running"  # it never finished, but everything up to the kill is there
    assert [a.name for a in store.agents(run.id)] == ["orchestrator", "worker", "worker"]
    assert [c.tool for c in store.tool_calls(run.id)][:1] == ["create_subagent"]


def test_local_spec_runs_the_embedded_engine_from_the_cli(tmp_path: Path) -> None:
    made = swarm("model", "init-tiny", str(tmp_path / "tiny"))
    assert made.returncode == 0, made.stderr
    task = write_task(tmp_path / "t.toml", '[task]\nprompt = "hello"\nmode = "single"\n[model]\nmax_tokens = 8\n')
    result = swarm("run", str(task), "--model", f"local:{tmp_path / 'tiny'}", "--json", "--db", str(tmp_path / "t.db"), "--max-tool-calls", "3")
    summary = json.loads(result.stdout)
    assert summary["status"] in {"succeeded", "budget_exceeded"}, result.stderr  # a random model may call tools
    assert summary["usage"]["output_tokens"] > 0

    missing = swarm("run", str(task), "--model", f"local:{tmp_path / 'nope'}", "--db", str(tmp_path / "t.db"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
