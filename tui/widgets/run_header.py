"""`RunHeader`: the run's identity and live figures, two lines at the top of the run view."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tui.run_model import Figures, RunModel
from tui.widgets.tool_calls import format_duration

RUN_STATUS_STYLE = {
    "running": "bold cyan", "succeeded": "bold green", "failed": "bold red",
    "cancelled": "bold yellow", "budget_exceeded": "bold yellow",
}


def first_line(text: str, width: int = 80) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 1] + "…"


class RunHeader(Widget):
    """Updated by the screen with `show(model, figures)` once per frame at most.

    Fixed height (three lines), so an update repaints this widget alone: no layout pass.
    """

    DEFAULT_CSS = "RunHeader { height: 3; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._last: tuple[object, ...] | None = None
        self._text = Text()

    def render(self) -> Text:
        return self._text

    def show(self, model: RunModel, figures: Figures) -> None:
        key = (figures, model.prompt, model.model, model.stop_reason)
        if key == self._last:
            return
        self._last = key
        text = Text()
        text.append(f"run {model.run_id}  ", style="bold")
        text.append(figures.status, style=RUN_STATUS_STYLE.get(figures.status, "bold"))
        text.append(f"  {model.model}  ", style="dim")
        text.append(first_line(model.prompt))
        text.append("\n")
        text.append(f"active agents {figures.num_active}/{figures.num_agents}", style="bold" if figures.num_active else "")
        text.append(f" · tool calls {figures.num_tool_calls}")
        text.append(f" · {figures.tokens_per_s:.1f} tok/s")
        text.append(f" · critical steps {figures.critical_steps}")
        text.append(f" · elapsed {format_duration(figures.elapsed_s)}")
        text.append(f" · tokens {figures.input_tokens}+{figures.output_tokens}", style="dim")
        if model.stop_reason:
            text.append(f"\nstop reason: {model.stop_reason}", style="yellow")
        self._text = text
        self.refresh()
