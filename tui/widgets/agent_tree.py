"""`AgentTree`: the run's agents as an indented list, drawn line by line (virtualised).

A Line-API widget: only the visible rows are rendered, so a run with 1,000 agents costs
what 40 cost. Rows come from a `RunModel` (its `order` and `agents`); the screen calls
`sync()` when agents were added and `refresh()` when figures changed. Moving the cursor
posts `AgentTree.Selected` up.
"""

from __future__ import annotations

import time

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.run_model import AgentView, RunModel

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STATUS_ICON = {"succeeded": "✔", "failed": "✘", "cancelled": "■", "budget_exceeded": "▲"}
STATUS_LABEL = {"budget_exceeded": "over budget"}
STATUS_STYLE = {
    "running": Style(color="cyan"),
    "succeeded": Style(color="green"),
    "failed": Style(color="red"),
    "cancelled": Style(color="yellow"),
    "budget_exceeded": Style(color="yellow"),
}


def agent_label(agent: AgentView) -> str:
    """`orchestrator`, or a sub-agent's name with its instance number (names repeat)."""
    if agent.role == "orchestrator":
        return agent.name
    return f"{agent.name} #{agent.id.rsplit('.', 1)[-1]}"


class AgentTree(ScrollView, can_focus=True):
    """The agents of one run, the orchestrator first and its sub-agents under it."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES = {"agent-tree--cursor"}
    DEFAULT_CSS = """
    AgentTree > .agent-tree--cursor { background: $accent 40%; }
    AgentTree:focus > .agent-tree--cursor { background: $accent; }
    """

    cursor: reactive[int] = reactive(0, always_update=False)

    class Selected(Message):
        """The cursor moved to another agent."""

        def __init__(self, agent_id: str) -> None:
            super().__init__()
            self.agent_id = agent_id

    def __init__(self, model: RunModel, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = model
        self._num_rows = 0

    @property
    def selected_id(self) -> str | None:
        order = self.model.order
        return order[self.cursor] if 0 <= self.cursor < min(len(order), self._num_rows) else None

    def sync(self) -> None:
        """Takes the model's rows after agents were added (keeps the selected agent)."""
        had_rows = self._num_rows > 0
        selected = self.selected_id if had_rows else None
        self._num_rows = len(self.model.order)
        self.virtual_size = Size(self.size.width, self._num_rows)
        if selected is not None and self.model.order[self.cursor] != selected:
            self.cursor = self.model.order.index(selected)
        elif not had_rows and self._num_rows:
            self.cursor = 0
            self.post_message(self.Selected(self.model.order[0]))
        self.refresh()

    def has_running(self, first: int | None = None) -> bool:
        """Whether a visible row is running (its spinner needs the next frame)."""
        top = int(self.scroll_offset.y) if first is None else first
        rows = self.model.order[top : top + self.size.height]
        return any(self.model.agents[agent_id].is_running for agent_id in rows)

    # -- keys -----------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.size.height - 1))

    def action_jump(self, index: int) -> None:
        self._move_to(index if index >= 0 else self._num_rows - 1)

    def _move_to(self, index: int) -> None:
        if self._num_rows:
            self.cursor = max(0, min(self._num_rows - 1, index))

    def watch_cursor(self, old: int, new: int) -> None:
        self.scroll_to_region_row(new)
        self.refresh()  # only the visible rows are drawn again
        if self.selected_id is not None:
            self.post_message(self.Selected(self.selected_id))

    def scroll_to_region_row(self, row: int) -> None:
        top, height = int(self.scroll_offset.y), self.size.height
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif height and row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True)

    # -- drawing ----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_offset.y) + y
        width = self.size.width
        base = self.rich_style
        if index >= self._num_rows:
            return Strip.blank(width, base)
        agent = self.model.agents[self.model.order[index]]
        if index == self.cursor:
            base = base + self.get_component_rich_style("agent-tree--cursor")
        if agent.is_running:
            icon = SPINNER[int(time.monotonic() * 10) % len(SPINNER)]
        else:
            icon = STATUS_ICON.get(agent.status, "?")
        status_style = base + STATUS_STYLE.get(agent.status, Style())
        status = STATUS_LABEL.get(agent.status, agent.status)
        # the name keeps at least a third of the width; the status word goes first
        figures = f" {status:<11} {agent.steps:>3} steps" if width >= 36 else f" {agent.steps:>3}"
        name_width = max(1, width - len(figures) - 2 * agent.depth - 2)
        name = agent_label(agent)
        name = name if len(name) <= name_width else name[: name_width - 1] + "…"
        segments = [
            Segment("  " * agent.depth, base),
            Segment(icon + " ", status_style),
            Segment(f"{name:<{name_width}}", base),
            Segment(figures, status_style),
        ]
        return Strip(segments).adjust_cell_length(width, base)
