"""`ToolCallsTable`: one agent's tool calls (tool, arguments, status, duration).

A `DataTable` (rendered line by line, so long tables are cheap) keyed by the call's record
id: new calls are added and finished ones updated in place, never the whole table again.
Highlighting a row posts DataTable's own `RowHighlighted` up; the screen shows details.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tui.run_model import ToolCallView

CALL_STATUS_STYLE = {"running": "cyan", "ok": "green", "error": "red", "cancelled": "yellow"}
_COLUMNS = (("tool", "tool"), ("arguments", "arguments"), ("status", "status"), ("duration", "duration"))


def _one_line(text: str, width: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class ToolCallsTable(DataTable):
    """The selected agent's tool calls; `show` and `upsert` come from the screen."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.agent_id: str | None = None

    def on_mount(self) -> None:
        for label, key in _COLUMNS:
            self.add_column(label, key=key)

    def show(self, agent_id: str, calls: list[ToolCallView]) -> None:
        """Shows another agent's calls."""
        self.agent_id = agent_id
        self.clear()
        self.add_rows_for(calls)

    def add_rows_for(self, calls: list[ToolCallView]) -> None:
        for call in calls:
            self.add_row(*self._cells(call), key=call.id)

    def upsert(self, calls: list[ToolCallView]) -> None:
        """Adds new calls and updates the ones already shown."""
        new = []
        for call in calls:
            if call.id in self.rows:
                status, duration = self._cells(call)[2:]
                self.update_cell(call.id, "status", status)
                self.update_cell(call.id, "duration", duration)
            else:
                new.append(call)
        self.add_rows_for(new)

    @staticmethod
    def _cells(call: ToolCallView) -> tuple[str, str, Text, str]:
        status = Text(call.status, style=CALL_STATUS_STYLE.get(call.status, ""))
        return call.tool, _one_line(call.arguments), status, format_duration(call.duration_s)
