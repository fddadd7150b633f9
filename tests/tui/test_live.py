"""Live runs: started in the TUI against a loopback OpenAI-protocol server, cancelled from
it, and runs written by another writer of the same database appearing and updating."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from storage.store import TraceStore
from swarm.launch import plan_run
from swarm.task_file import load_task
from swarm.testing.fake_openai import FakeOpenAIServer
from tests.tui.conftest import SIZE, record
from tui.app import SwarmApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.new_run import NewRunScreen
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.synthetic import synthetic_events
from tui.widgets.agent_tree import AgentTree

pytestmark = pytest.mark.anyio


async def wait_for(pilot, condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout_s):
        while not condition():
            await pilot.pause(0.05)


def write_task(path: Path, server: FakeOpenAIServer, prompt: str = "split this") -> Path:
    path.write_text(f'[task]\nprompt = "{prompt}"\n[model]\nspec = "openai:{server.base_url}"\nname = "fake-kimi"\n')
    return path


async def test_n_starts_a_run_from_the_form_and_it_streams_to_the_end(tmp_path: Path, fast_server: FakeOpenAIServer) -> None:
    store = TraceStore(tmp_path / "t.db")
    app = SwarmApp(store, default_model=f"openai:{fast_server.base_url}", default_model_name="fake-kimi")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)
        await pilot.press(*"two parts please")
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is not None
        await wait_for(pilot, lambda: screen.model.status != "running")
        assert screen.model.status == "succeeded"
        assert len(screen.model.agents) == 3  # the orchestrator and two workers
        assert screen.model.final_answer.startswith("FINAL")
        assert screen.model.figures().num_tool_calls == 5  # create, 2 assign, 2 echo
        await pilot.press("q")
        runs_screen = app.screen
        assert isinstance(runs_screen, RunsScreen)
        await wait_for(pilot, lambda: [r.status for r in runs_screen.runs] == ["succeeded"])
    assert store.get_run(screen.model.run_id).prompt == "two parts please"  # recorded like `swarm run`


async def test_the_form_shows_a_bad_model_spec_as_one_line(tmp_path: Path) -> None:
    app = SwarmApp(TraceStore(tmp_path / "t.db"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await pilot.pause()
        await pilot.press(*"hello")
        await pilot.press("tab")
        await pilot.press(*"gpt:foo")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)
        assert "is not one of openai:" in str(app.screen.query_one("#error").content)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_a_task_file_given_at_start_runs_at_once(tmp_path: Path, fast_server: FakeOpenAIServer) -> None:
    store = TraceStore(tmp_path / "t.db")
    task = write_task(tmp_path / "task.toml", fast_server)
    app = SwarmApp(store, plan=plan_run(load_task(task)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.status == "succeeded")
        assert store.get_run(screen.model.run_id).status == "succeeded"


async def test_c_cancels_a_sub_agent_then_the_whole_run(tmp_path: Path, slow_server: FakeOpenAIServer) -> None:
    store = TraceStore(tmp_path / "t.db")
    app = SwarmApp(store, plan=plan_run(load_task(write_task(tmp_path / "task.toml", slow_server))))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: len(screen.model.order) == 3)
        tree = screen.query_one(AgentTree)
        await pilot.press("down")  # the first sub-agent
        first = tree.selected_id
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.model.agents[first].status == "cancelled")
        assert screen.model.status == "running"  # its sibling still works
        await pilot.press("up", "c")
        await pilot.pause()
        assert "whole run" in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("n")  # changed my mind
        await pilot.pause(0.2)
        assert screen.model.status == "running"
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: screen.model.status == "cancelled")
    assert store.get_run(screen.model.run_id).status == "cancelled"


async def test_a_run_written_elsewhere_appears_and_updates(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db")
    events = list(synthetic_events("elsewhere0000001", num_subagents=2, t0=1_700_000_000.0))
    first_half = next(i for i, e in enumerate(events) if e.kind == "agent_finished")
    other_writer = TraceStore(store.path)  # another connection, as another process has
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        record(other_writer, events[:first_half])
        runs_screen = app.screen
        await wait_for(pilot, lambda: [r.id for r in runs_screen.runs] == ["elsewhere0000001"])  # type: ignore[attr-defined]
        assert runs_screen.runs[0].status == "running" and runs_screen.runs[0].num_agents == 3  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.poller is not None
        await wait_for(pilot, lambda: len(screen.model.agents) == 3)
        assert all(a.is_running for a in screen.model.agents.values())
        assert screen.model.agents["elsewhere0000001.1"].steps == 3
        record(other_writer, events[first_half:])
        await wait_for(pilot, lambda: screen.model.status == "succeeded")
        await pilot.pause(0.2)
        assert not any(a.is_running for a in screen.model.agents.values())
        assert all(c.status == "ok" for c in screen.model.tool_calls.values())
        assert screen.model.figures().critical_steps == 6


async def test_leaving_a_live_run_keeps_it_going_and_quitting_cancels_it(tmp_path: Path, slow_server: FakeOpenAIServer) -> None:
    store = TraceStore(tmp_path / "t.db")
    app = SwarmApp(store, plan=plan_run(load_task(write_task(tmp_path / "task.toml", slow_server))))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        run_id = app.screen.model.run_id  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: len(app.screen.model.order) == 3)  # type: ignore[attr-defined]
        await pilot.press("q")
        await pilot.pause(0.3)
        assert isinstance(app.screen, RunsScreen)
        await wait_for(pilot, lambda: [r.status for r in app.screen.runs] == ["running"])  # type: ignore[attr-defined]
        await pilot.press("enter")  # reopened: the same live run, all its agents
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is app.live_runs[run_id]
        assert screen.query_one(AgentTree).selected_id == f"{run_id}.0"
        await pilot.press("q", "q")
        await wait_for(pilot, lambda: not app.is_running)
    assert store.get_run(run_id).status == "cancelled"
    assert store.get_run(run_id).stop_reason == "cancelled: the TUI was closed"
