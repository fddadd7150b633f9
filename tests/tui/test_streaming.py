"""Streamed text shows as it arrives, and running agents spin, in a run fed live."""

from __future__ import annotations

import pytest
from textual.app import App

from swarm.events import MessageAdded, TextDelta
from swarm.messages import Message
from tests.tui.conftest import SIZE
from tui.live_run import BufferSink
from tui.run_model import RunModel
from tui.screens.run import RunScreen
from tui.synthetic import synthetic_events
from tui.widgets.agent_tree import SPINNER, AgentTree
from tui.widgets.transcript import Transcript

pytestmark = pytest.mark.anyio


class OneRunApp(App[None]):
    def __init__(self, model: RunModel, sink: BufferSink) -> None:
        super().__init__()
        self.model, self.sink = model, sink

    def on_mount(self) -> None:
        self.push_screen(RunScreen(self.model, sink=self.sink))


async def test_tokens_stream_into_the_transcript_then_become_the_message() -> None:
    model, sink = RunModel("s1"), BufferSink()
    for event in synthetic_events("s1", num_subagents=1, calls_per_agent=1, is_finished=False):
        sink.emit(event)
    app = OneRunApp(model, sink)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        transcript = app.screen.query_one(Transcript)
        assert transcript.agent_id == "s1.0"
        sink.emit(TextDelta(run_id="s1", at=0.0, agent_id="s1.0", text="All parts "))
        await pilot.pause(0.15)
        sink.emit(TextDelta(run_id="s1", at=0.0, agent_id="s1.0", text="are **done**"))
        await pilot.pause(0.15)
        assert transcript._streaming.display and transcript._streamed_text == "All parts are **done**"
        lines_before = len(transcript.log_view.lines)
        sink.emit(MessageAdded(run_id="s1", at=0.0, agent_id="s1.0", seq=3,
                               message=Message(role="assistant", content="All parts are **done**")))
        await pilot.pause(0.15)
        assert not transcript._streaming.display
        assert len(transcript.log_view.lines) > lines_before
        assert "All parts are done" in "\n".join(s.text for s in transcript.log_view.lines)


async def test_running_agents_show_a_spinner() -> None:
    model, sink = RunModel("s2"), BufferSink()
    for event in synthetic_events("s2", num_subagents=2, calls_per_agent=1, is_finished=False):
        sink.emit(event)
    app = OneRunApp(model, sink)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        tree = app.screen.query_one(AgentTree)
        first_line = tree.render_line(0).text
        assert first_line[0] in SPINNER and "running" in first_line and "orchestrator" in first_line
