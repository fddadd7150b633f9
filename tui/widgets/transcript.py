"""`Transcript`: one agent's conversation, messages as Markdown, streamed text as it arrives.

Messages are appended as widgets (never re-rendered once shown); the text streamed for the
model call in progress lives in one widget at the end that the screen updates at most once
per frame. Stays scrolled to the end while the reader is at the end.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

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


class Transcript(VerticalScroll):
    """The selected agent's messages; `show`, `append` and `set_streaming` come from the screen."""

    DEFAULT_CSS = """
    Transcript > .message { margin: 0 0 1 0; }
    Transcript > #streaming { color: $text-muted; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.agent_id: str | None = None
        self.num_shown = 0
        self._streaming = Static("", id="streaming")

    def compose(self):  # type: ignore[no-untyped-def]
        yield self._streaming

    def show(self, agent_id: str, messages: list[MessageView], streaming: str) -> None:
        """Shows another agent's conversation from the start."""
        self.agent_id = agent_id
        self.num_shown = 0
        for child in list(self.children):
            if child is not self._streaming:
                child.remove()
        self.append(messages)
        self.set_streaming(streaming)
        self.scroll_end(animate=False, immediate=False)

    def append(self, messages: list[MessageView]) -> None:
        """Shows the messages after the ones already shown."""
        new = messages[self.num_shown :]
        if not new:
            return
        is_at_end = self.scroll_y >= self.max_scroll_y - 1
        self.mount_all([Static(render_message(m), classes="message") for m in new], before=self._streaming)
        self.num_shown = len(messages)
        if is_at_end:
            self.scroll_end(animate=False, immediate=False)

    def set_streaming(self, text: str) -> None:
        """The text of the model call in progress (empty when none)."""
        self._streaming.update(Group(Text("assistant (streaming)", style="bold cyan"), Markdown(text)) if text else "")
        self._streaming.display = bool(text)
        if text and self.scroll_y >= self.max_scroll_y - 2:
            self.scroll_end(animate=False, immediate=False)
