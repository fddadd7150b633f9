"""`RunsScreen`: the recorded runs, newest first; Enter opens one, `n` starts a new one.

Re-read from the database every second (in a thread), so runs started elsewhere appear
and running ones update. Rows are updated in place; the table is rebuilt only when the set
of runs changes, keeping the cursor on the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from sqlalchemy.exc import SQLAlchemyError
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from storage.errors import StorageError
from storage.store import TraceStore
from tui.db_source import RunSummary, list_run_summaries
from tui.widgets.run_header import RUN_STATUS_STYLE, first_line
from tui.widgets.tool_calls import format_duration

REFRESH_S = 1.0
_COLUMNS = ("run", "prompt", "status", "agents", "tool calls", "critical", "tokens", "duration")


def display_path(path: Path) -> str:
    """The database path as a person would type it: relative to here, or from ~."""
    path = path.resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return str(path)


def summary_cells(run: RunSummary, now: float) -> tuple[object, ...]:
    duration = run.wall_time_s if run.wall_time_s is not None else (now - run.started_at if run.status == "running" else None)
    return (
        run.id[:8], first_line(run.prompt, 50), Text(run.status, style=RUN_STATUS_STYLE.get(run.status, "")),
        str(run.num_agents), str(run.num_tool_calls), "-" if run.critical_steps is None else str(run.critical_steps),
        str(run.num_tokens), format_duration(duration),
    )


class RunsTable(DataTable):
    """The runs; Enter selects the row under the cursor (shown in the footer as Open)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class RunsScreen(Screen):
    """The runs list."""

    CSS_PATH = "runs.tcss"
    BINDINGS = [
        Binding("n", "new_run", "New run"),
        Binding("r", "reload", "Reload"),
        Binding("q", "app.quit", "Quit"),
    ]

    class OpenRun(Message):
        """The person chose a run to open."""

        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    class NewRun(Message):
        """The person asked for the new-run form."""

    def __init__(self, store: TraceStore) -> None:
        super().__init__()
        self.store = store
        self.runs: list[RunSummary] = []

    def compose(self) -> ComposeResult:
        yield Static(f"swarm · runs in {display_path(self.store.path)}", id="title")
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("No runs yet: press n to start one.", id="empty")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label in _COLUMNS:
            table.add_column(label, key=label)
        self.action_reload()
        self.set_interval(REFRESH_S, self.action_reload)

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(exclusive=True, group="runs-list")
    async def action_reload(self) -> None:
        try:
            runs = await anyio.to_thread.run_sync(list_run_summaries, self.store)
        except (StorageError, SQLAlchemyError) as exc:  # shown; the next reload tries again
            self.notify(f"cannot read runs: {exc}", severity="warning")
            return
        if not self.query("#runs"):  # torn down while it read (the app is quitting)
            return
        self.show_runs(runs, time.time())

    def show_runs(self, runs: list[RunSummary], now: float) -> None:
        table = self.query_one("#runs", DataTable)
        self.query_one("#empty").display = not runs
        if [r.id for r in runs] == [r.id for r in self.runs]:
            for old, new in zip(self.runs, runs, strict=True):
                if old != new or new.status == "running":
                    for column, cell in zip(_COLUMNS, summary_cells(new, now), strict=True):
                        table.update_cell(new.id, column, cell)
        else:
            selected = self.selected_run_id
            table.clear()
            for run in runs:
                table.add_row(*summary_cells(run, now), key=run.id)
            ids = [r.id for r in runs]
            if selected in ids:
                table.move_cursor(row=ids.index(selected), animate=False)
        self.runs = runs

    @property
    def selected_run_id(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.cursor_row < 0 or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row].id

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Handled here rather than with a priority binding, so that Enter acts on the row the
        # keys typed before it moved to (the table handles keys in order).
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.OpenRun(event.row_key.value))

    def action_new_run(self) -> None:
        self.post_message(self.NewRun())
