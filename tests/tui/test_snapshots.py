"""Snapshots of the main screens (pytest-textual-snapshot), on fixed data at a fixed size.

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the new SVGs before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.store import TraceStore
from tests.tui.conftest import SIZE
from tui.app import SwarmApp


@pytest.fixture
def app(store: TraceStore, monkeypatch: pytest.MonkeyPatch) -> SwarmApp:
    monkeypatch.chdir(store.path.parent)  # the title shows the database path relative to here
    return SwarmApp(store, default_model="openai:http://127.0.0.1:8000/v1", default_model_name="kimi-k2.5")


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(0.3)
    await pilot.wait_for_scheduled_animations()


def test_runs_list(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app, terminal_size=SIZE, run_before=_settle)


def test_run_view_orchestrator(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("down", "enter")
        await _settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_view_sub_agent_with_a_tool_call_selected(snap_compare, app: SwarmApp) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("down", "enter")
        await _settle(pilot)
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
