"""Snapshots of the main screens (pytest-textual-snapshot), on fixed data at a fixed size.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the new SVGs before committing them.
"""

from __future__ import annotations

import anyio
import pytest

from storage.store import TraceStore
from tests.tui.conftest import SIZE
from tui.app import SwarmApp
from tui.screens.run import RunScreen
from tui.screens.runs import RunsScreen
from tui.widgets.agent_tree import AgentTree


@pytest.fixture
def app(store: TraceStore, monkeypatch: pytest.MonkeyPatch) -> SwarmApp:
    monkeypatch.chdir(store.path.parent)  # the title shows the database path relative to here
    return SwarmApp(store, default_model="openai:http://127.0.0.1:8000/v1", default_model_name="kimi-k2.5")


async def _settle(pilot, screen_type: type | None = None) -> None:  # type: ignore[no-untyped-def]
    """Waits until the screen (of `screen_type`, once a key press has pushed it) shows
    everything it will (a loaded machine may take a while)."""
    if screen_type is not None:
        with anyio.fail_after(10):
            while not isinstance(pilot.app.screen, screen_type):
                await pilot.pause(0.05)
    screen = pilot.app.screen

    def is_settled() -> bool:
        if isinstance(screen, RunsScreen):
            return bool(screen.runs)
        if isinstance(screen, RunScreen):
            tree = screen.query_one(AgentTree)
            is_loaded = screen.poller is None or screen.poller.is_finished
            return is_loaded and tree.selected_id is not None and screen.shown_agent_id == tree.selected_id
        return True

    with anyio.fail_after(10):
        while not is_settled():
            await pilot.pause(0.05)
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()


def test_runs_list(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app, terminal_size=SIZE, run_before=_settle)


def test_run_view_orchestrator(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("down", "enter")
        await _settle(pilot, RunScreen)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_view_sub_agent_with_a_tool_call_selected(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("down", "enter")
        await _settle(pilot, RunScreen)
        await pilot.press("down", "down")
        await _settle(pilot)
        await pilot.press("tab", "tab", "down")
        await _settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_new_run_form(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("n")
        await _settle(pilot)
        await pilot.press(*"Compare three sorting algorithms")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
