"""`Transcript`: one agent's conversation, messages as Markdown, streamed text as it arrives.

Messages are written to a `RichLog` (rendered once, drawn line by line: a long transcript
costs what its visible lines cost); the text streamed for the model call in progress lives
in one widget below it that the screen updates at most once per frame.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog, Static

from tui.run_model import MessageView

_MAX_TOOL_RESULT_CHARS = 2000
_MAX_SYSTEM_CHARS = 400

ROLE_STYLE = {"system": "dim", "user": "bold magenta", "assistant": "bold cyan", "tool": "bold yellow"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def render_message(message: MessageView) -> RenderableType:
    """A message as the transcript shows it: a role line, then its content."""
    title = message.role if message.role != "tool" else f"tool result · {message.name or ''}"
    parts: list[RenderableType] = [Text(title, style=ROLE_STYLE.get(message.role, "bold"))]
    content = message.content or ""
    if message.role == "system":
        parts.append(Text(_clip(content, _MAX_SYSTEM_CHARS), style="dim"))
    elif message.role == "tool":
        parts.append(Text(_clip(content, _MAX_TOOL_RESULT_CHARS)))
    elif content:
        parts.append(Markdown(content))
    if message.reasoning:
        parts.insert(1, Text(_clip(message.reasoning, _MAX_TOOL_RESULT_CHARS), style="italic dim"))
    for name, arguments in message.tool_calls:
        parts.append(Text(f"→ {name}({_clip(arguments, 300)})", style="yellow"))
    return Group(*parts)


class Transcript(Vertical):
    """The selected agent's messages; `show`, `append` and `set_streaming` come from the screen."""

    DEFAULT_CSS = """
    Transcript > RichLog { height: 1fr; padding: 0 1; background: $surface; }
    Transcript > #streaming { height: auto; max-height: 50%; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.agent_id: str | None = None
        self.num_shown = 0
        self.log_view = RichLog(min_width=20, wrap=True)
        self._streaming = Static("", id="streaming")
        self._streaming.display = False
        self._streamed_text = ""

    def compose(self) -> ComposeResult:
        yield self.log_view
        yield self._streaming

    def show(self, agent_id: str, messages: list[MessageView], streaming: str) -> None:
        """Shows another agent's conversation from the start."""
        self.agent_id = agent_id
        self.num_shown = 0
        self.log_view.clear()
        self.append(messages)
        self.set_streaming(streaming)

    def append(self, messages: list[MessageView]) -> None:
        """Shows the messages after the ones already shown."""
        for message in messages[self.num_shown :]:
            self.log_view.write(Group(render_message(message), Text("")), expand=True)
        self.num_shown = len(messages)

    def set_streaming(self, text: str) -> None:
        """The text of the model call in progress (empty when none)."""
        if text == self._streamed_text:
            return
        self._streamed_text = text
        self._streaming.update(Group(Text("assistant (streaming)", style="bold cyan"), Markdown(text)) if text else "")
        self._streaming.display = bool(text)
