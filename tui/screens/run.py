"""`RunScreen`: one run, live or recorded: agent tree, transcript, tool calls, figures.

The screen owns a `RunModel` and one source feeding it: a `BufferSink` (a run this TUI
started, `LiveRun.sink`; its events are drained once per frame) or a `RunPoller` (any
other run; new rows are read from the database every half second, in a thread, until it
ends). `live`, when given, is what `c` cancels. Once per frame the screen takes the
model's changes and updates only the widgets they touch.
"""

from __future__ import annotations

import anyio
from rich.console import Group
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Static

from storage.errors import StorageError
from tui.db_source import RunPoller
from tui.live_run import BufferSink, LiveRun
from tui.run_model import RunModel, ToolCallView
from tui.screens.confirm import ConfirmScreen
from tui.widgets.agent_tree import AgentTree, agent_label
from tui.widgets.run_header import RunHeader
from tui.widgets.tool_calls import ToolCallsTable, format_duration
from tui.widgets.transcript import Transcript

FRAME_S = 1 / 20
POLL_S = 0.5
# The panes of a newly selected agent load once the cursor rests this long, so the frame
# that shows the cursor move is drawn at once and a held arrow key doesn't load every agent.
SELECT_DELAY_S = 0.06


def call_details(call: ToolCallView) -> Group:
    outcome = call.error if call.error else (call.result or "")
    return Group(
        Text(f"{call.tool} · step {call.step} · {call.status} · {format_duration(call.duration_s)}", style="bold"),
        Text(f"arguments: {call.arguments}"),
        Text(("error: " if call.error else "result: ") + outcome[:2000], style="red" if call.error else ""),
    )


class RunScreen(Screen):
    """The run view."""

    CSS_PATH = "run.tcss"
    BINDINGS = [
        Binding("q", "back", "Back"),
        Binding("c", "cancel", "Cancel agent/run"),
        Binding("t", "focus_next", "Next pane", show=False),
    ]

    def __init__(
        self,
        model: RunModel,
        *,
        live: LiveRun | None = None,
        sink: BufferSink | None = None,
        poller: RunPoller | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.live = live
        self.sink = sink or (live.sink if live is not None else None)
        self.poller = poller
        self.shown_agent_id: str | None = None
        self._select_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="body"):
            yield AgentTree(self.model, id="agents")
            with Vertical(id="detail"):
                yield Transcript(id="transcript")
                yield ToolCallsTable(id="calls")
                yield Static("", id="call-details")
        yield Footer()

    def on_mount(self) -> None:
        tree = self.query_one(AgentTree)
        tree.focus()
        self.frame()
        tree.sync()  # a live run reopened: its agents came before this screen
        self.set_interval(FRAME_S, self.frame)
        if self.poller is not None:
            self.poll()

    # -- feeding the model ------------------------------------------------------------

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        poller = self.poller
        assert poller is not None
        while True:
            try:
                result = await anyio.to_thread.run_sync(poller.fetch)
            except (StorageError, SQLAlchemyError) as exc:  # e.g. locked past the busy timeout: try again
                self.notify(f"cannot read the run: {exc}", severity="warning")
                await anyio.sleep(POLL_S * 4)
                continue
            for _ in poller.apply_in_steps(self.model, result):
                await anyio.sleep(0)  # let frames and keys through while a big run loads
            if poller.is_finished:
                return
            await anyio.sleep(POLL_S)

    def frame(self) -> None:
        """Takes what changed since the last frame and updates just those widgets."""
        model = self.model
        if self.sink is not None:
            self.sink.drain(model)
        changes = model.take_changes()
        tree = self.query_one(AgentTree)
        if changes.is_structure:
            tree.sync()
        elif changes.agents or (model.status == "running" and tree.has_running()):
            tree.refresh()
        self.query_one(RunHeader).show(model, model.figures())
        selected = self.shown_agent_id
        if selected is None:
            return
        transcript = self.query_one(Transcript)
        if selected in changes.messages:
            transcript.append(model.messages.get(selected, []))
        if selected in changes.streamed or selected in changes.messages:
            transcript.set_streaming(model.streaming.get(selected, ""))
        calls = [model.tool_calls[i] for i in changes.tool_calls if model.tool_calls[i].agent_id == selected]
        if calls:
            calls.sort(key=lambda call: call.started_at)
            self.query_one(ToolCallsTable).upsert(calls)
            self._show_call_details()

    # -- selection --------------------------------------------------------------------

    def on_agent_tree_selected(self, message: AgentTree.Selected) -> None:
        if self._select_timer is not None:
            self._select_timer.stop()
        if message.agent_id == self.shown_agent_id:
            return
        if self.shown_agent_id is None:
            self.show_agent(message.agent_id)
        else:
            self._select_timer = self.set_timer(SELECT_DELAY_S, lambda: self.show_agent(message.agent_id))

    def show_agent(self, agent_id: str) -> None:
        """Loads the transcript and tool calls of `agent_id`."""
        model, self.shown_agent_id = self.model, agent_id
        self.query_one(Transcript).show(agent_id, model.messages.get(agent_id, []), model.streaming.get(agent_id, ""))
        calls = [model.tool_calls[i] for i in model.calls_by_agent.get(agent_id, [])]
        self.query_one(ToolCallsTable).show(agent_id, calls)
        self._show_call_details()

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        self._show_call_details()

    def _show_call_details(self) -> None:
        table, details = self.query_one(ToolCallsTable), self.query_one("#call-details", Static)
        if table.row_count == 0:
            details.update(Text("no tool calls", style="dim"))
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        call = self.model.tool_calls.get(key or "")
        details.update(call_details(call) if call else "")

    # -- actions ----------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_cancel(self) -> None:
        agent_id = self.query_one(AgentTree).selected_id
        agent = self.model.agents.get(agent_id or "")
        if agent is None:
            return
        if self.live is None:
            self.notify("This run was started elsewhere: cancel it where it runs.", severity="warning")
            return
        if self.model.status != "running" or not self.live.is_running:
            self.notify("The run has ended.", severity="warning")
            return
        is_root = agent.parent_id is None
        if not is_root and not agent.is_running:
            self.notify(f"{agent_label(agent)} is not running.", severity="warning")
            return
        question = "Cancel the whole run?" if is_root else f"Cancel sub-agent {agent_label(agent)}?"
        live = self.live

        def confirmed(is_yes: bool | None) -> None:
            if not is_yes:
                return
            if is_root:
                live.cancel("cancelled by user (TUI)")
            elif not live.cancel_agent(agent.id, "cancelled by user (TUI)"):
                self.notify(f"{agent_label(agent)} had already finished.")

        self.app.push_screen(ConfirmScreen(question), confirmed)
