"""`swarm tui` as a person runs it: a real process in a real terminal (tmux), and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from storage.store import TraceStore
from tests.tui.conftest import record
from tui.synthetic import synthetic_events

ROOT = Path(__file__).resolve().parents[2]


def swarm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.toml"], "no such task file"),
        (["--model", "gpt:foo"], "is not one of openai:"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = swarm("tui", "--db", str(tmp_path / "t.db"), *[str(tmp_path / a) if a.endswith(".toml") else a for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_importing_the_tui_never_imports_torch() -> None:
    code = "import sys, tui.app, swarm.cli; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr


def _capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True).stdout


def _wait_for_screen(session: str, text: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = _capture(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared on the screen:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed: the real-terminal test needs it")
def test_swarm_tui_in_a_real_terminal_lists_runs_and_opens_one(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    record(TraceStore(db), synthetic_events("tmuxrun000000001", prompt="Find the tallest mountains", num_subagents=2))
    session = f"swarm-tui-test-{uuid.uuid4().hex[:8]}"
    command = (
        f"env -u COLUMNS -u LINES PYTHONPATH={ROOT} SWARM_HOME={tmp_path / 'home'} TERM=xterm-256color "
        f"{sys.executable} -m swarm tui --db {db}"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        screen = _wait_for_screen(session, "Find the tallest mountains")
        assert "tmuxrun0" in screen and "succeeded" in screen
        assert "Quit" in screen  # the footer shows the bindings
        subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)
        screen = _wait_for_screen(session, "researcher #2")
        assert "orchestrator" in screen and "critical steps 6" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        _wait_for_screen(session, "Quit")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
            if not alive:
                break
            time.sleep(0.2)
        assert not alive, "q on the runs list did not quit"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
