"""`swarm demo --tui`: the demo's two runs in the TUI with the reference policy, real
Chromium and the real fixture site; quitting mid-run; and the flag that cannot go with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from demo.live import DemoJob
from demo.policy import PolicyChatModel
from demo.trajectories import SUBAGENT_PROMPT
from storage.store import TraceStore
from swarm.messages import Message, ToolSpec
from swarm.model import CallContext, ModelResponse
from tui.app import SwarmApp
from tui.screens.run import RunScreen

ROOT = Path(__file__).resolve().parents[2]
SIZE = (120, 40)
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")


class CountingPolicy(PolicyChatModel):
    """The policy, counting `aclose` calls; with `slow_s`, sub-agents think that long per step."""

    def __init__(self, slow_s: float = 0.0) -> None:
        self.slow_s = slow_s
        self.num_closes = 0

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext) -> ModelResponse:
        if self.slow_s and messages[0].content == SUBAGENT_PROMPT:
            await anyio.sleep(self.slow_s)
        return await super().complete(messages, tools, context)

    async def aclose(self) -> None:
        self.num_closes += 1


async def wait_for(pilot, condition, timeout_s: float = 25.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout_s):
        while not condition():
            await pilot.pause(0.05)


def chromium_children() -> list[int]:
    """Pids of this process's descendants whose command line names chromium."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                found = True
    named = []
    for pid in mine - {os.getpid()}:
        try:
            if b"chrom" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                named.append(pid)
        except OSError:
            continue
    return named


@needs_chromium
@pytest.mark.anyio
async def test_the_demo_runs_swarm_then_single_in_the_tui_and_shows_the_figures(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db")
    model = CountingPolicy()
    job = DemoJob(seed=3, num_entities=2, model=model)
    app = SwarmApp(store, job=job)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))  # once Chromium is up, before the run ends
        swarm_screen = app.screen
        assert isinstance(swarm_screen, RunScreen) and swarm_screen.live is not None
        assert any("starting" in n.message for n in app._notifications)  # what the wait before it was
        await wait_for(pilot, lambda: job.result is not None)
        single_screen = app.screen
        assert isinstance(single_screen, RunScreen) and single_screen is not swarm_screen  # opened over it
        assert swarm_screen.model.status == single_screen.model.status == "succeeded"
        assert len(swarm_screen.model.agents) == 3 and len(single_screen.model.agents) == 1
        # posted after the result (the "starting" notice is there already)
        await wait_for(pilot, lambda: any("speedup" in n.message for n in app._notifications))
        notices = [n.message for n in app._notifications]
        assert any("swarm:  accuracy 100%" in m and "single: accuracy 100%" in m and "speedup" in m for m in notices), notices
        await pilot.press("q")  # back to the swarm run, which stays browsable
        assert app.screen is swarm_screen
    result = job.result
    assert result["accuracy"] == 1.0 and result["single_agent"]["accuracy"] == 1.0
    runs = {run.mode: run for run in store.list_runs(10)}
    assert set(runs) == {"swarm", "single"}
    assert runs["swarm"].id == result["run_id"] and runs["single"].id == result["single_agent"]["run_id"]
    assert all(run.status == "succeeded" for run in runs.values())
    assert model.num_closes == 1
    assert chromium_children() == []


@needs_chromium
@pytest.mark.anyio
async def test_quitting_mid_demo_cancels_the_swarm_run_and_starts_no_baseline(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db")
    model = CountingPolicy(slow_s=30.0)
    job = DemoJob(seed=4, num_entities=2, model=model)
    app = SwarmApp(store, job=job)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.model.agents) == 3)  # both sub-agents thinking
        assert chromium_children() != []  # their browsers are up (so the check below means something)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running, timeout_s=10)
    assert job.result is None
    runs = store.list_runs(10)
    assert [(run.mode, run.status, run.stop_reason) for run in runs] == [("swarm", "cancelled", "cancelled: the TUI was closed")]
    assert model.num_closes == 1
    assert chromium_children() == []


def test_tui_with_json_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm", "demo", "--tui", "--json", "--db", str(tmp_path / "t.db")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--tui" in lines[0] and "--json" in lines[0], lines
    assert result.stdout == ""
    assert not (tmp_path / "t.db").exists()
