"""Browsing recorded runs with the keyboard: the runs list, a run's agents, its tool calls."""

from __future__ import annotations

import io

import anyio
import pytest
from rich.console import Console
from textual.widgets import Static

from storage.store import TraceStore
from tests.tui.conftest import NEW_RUN, OLD_RUN, SIZE
from tui.app import SwarmApp
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.widgets.agent_tree import AgentTree
from tui.widgets.tool_calls import ToolCallsTable
from tui.widgets.transcript import Transcript

pytestmark = pytest.mark.anyio


async def open_run(pilot, *, row: int) -> RunScreen:  # type: ignore[no-untyped-def]
    await pilot.pause()
    for _ in range(row):
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, RunScreen)
    with anyio.fail_after(10):  # the first poll, then the orchestrator's panes
        while not (screen.poller and screen.poller.is_finished and screen.shown_agent_id):
            await pilot.pause(0.05)
    await pilot.pause(0.1)
    return screen


async def panes_loaded(pilot, screen: RunScreen) -> None:  # type: ignore[no-untyped-def]
    """Waits for the selected agent's transcript and tool calls (loaded once the cursor rests)."""
    tree = screen.query_one(AgentTree)
    with anyio.fail_after(10):
        while screen.shown_agent_id != tree.selected_id:
            await pilot.pause(0.05)
    await pilot.pause()


def plain(widget: Static) -> str:
    """A Static's content as plain text, the way a person reads it."""
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def transcript_text(screen: RunScreen) -> str:
    transcript = screen.query_one(Transcript)
    return "\n".join(strip.text for strip in transcript.log_view.lines) + plain(transcript.query_one("#streaming", Static))


async def test_runs_list_shows_newest_first_with_its_figures(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        with anyio.fail_after(10):
            while not screen.runs:
                await pilot.pause(0.05)
        assert [run.id for run in screen.runs] == [NEW_RUN, OLD_RUN]
        old = screen.runs[1]
        assert (old.prompt.splitlines()[0], old.status, old.num_agents, old.num_tool_calls, old.critical_steps) == (
            "Survey sorting algorithms", "succeeded", 4, 9, 6,
        )


async def test_enter_opens_a_run_and_q_goes_back_then_quits(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, row=1)
        assert screen.model.run_id == OLD_RUN
        assert screen.model.status == "succeeded"
        await pilot.press("q")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


async def test_the_agent_tree_lists_the_orchestrator_then_its_sub_agents(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, row=1)
        model = screen.model
        names = [(model.agents[i].name, model.agents[i].depth, model.agents[i].steps) for i in model.order]
        assert names == [("orchestrator", 0, 3), ("researcher", 1, 3), ("researcher", 1, 3), ("researcher", 1, 3)]
        figures = model.figures()
        assert (figures.num_tool_calls, figures.critical_steps, figures.elapsed_s) == (9, 6, 42.0)


async def test_moving_through_agents_shows_each_transcript_and_tool_calls(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, row=1)
        tree, table = screen.query_one(AgentTree), screen.query_one(ToolCallsTable)
        assert tree.selected_id == f"{OLD_RUN}.0"
        assert table.row_count == 3 and "All parts are done." in transcript_text(screen)
        await pilot.press("down", "down")
        await panes_loaded(pilot, screen)
        assert tree.selected_id == f"{OLD_RUN}.2"
        assert table.row_count == 2
        assert "part 1 query 0" in transcript_text(screen)
        assert "Findings" in transcript_text(screen)  # the answer, rendered from Markdown
        await pilot.press("up")
        await panes_loaded(pilot, screen)
        assert "part 0 query 0" in transcript_text(screen)


async def test_selecting_a_tool_call_shows_its_details(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, row=1)
        await pilot.press("down")  # researcher #1
        await panes_loaded(pilot, screen)
        table = screen.query_one(ToolCallsTable)
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        details = plain(screen.query_one("#call-details", Static))
        assert table.cursor_row == 1
        assert "echo · step 2 · ok · 125ms" in details
        assert "result: echo: part 0 query 1" in details


async def test_cancel_on_a_recorded_run_explains_it_cannot(store: TraceStore) -> None:
    app = SwarmApp(store)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_run(pilot, row=0)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)  # no confirmation for a finished run
        assert any("ended" in n.message or "elsewhere" in n.message for n in app._notifications)
