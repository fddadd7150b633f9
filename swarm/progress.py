"""Human-readable progress of a run on stderr (rich), for `swarm run` without `--json`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from swarm.events import AgentFinished, AgentStarted, Event, RunFinished, RunStarted, ToolCallFinished

_STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "budget_exceeded": "yellow"}


def _short(text: str | None, width: int = 90) -> str:
    line = " ".join((text or "").split())
    return escape(line if len(line) <= width else line[: width - 1] + "…")


class ProgressPrinter:
    """A `TraceSink` that prints agent starts and ends, tool errors and the run's end."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self._names: dict[str, str] = {}

    def emit(self, event: Event) -> None:
        c = self.console
        if isinstance(event, RunStarted):
            c.print(f"[bold]run {event.run_id}[/] ({event.mode}, {escape(event.model)}): {_short(event.prompt)}")
        elif isinstance(event, AgentStarted):
            self._names[event.agent_id] = event.name
            if event.role == "subagent":
                c.print(f"  [cyan]▶ {escape(event.name)}[/] [dim]{event.agent_id}[/] {_short(event.task, 70)}")
        elif isinstance(event, AgentFinished):
            name = self._names.get(event.agent_id, event.agent_id)
            style = _STATUS_STYLE.get(event.status, "white")
            detail = _short(event.final_answer, 60) if event.status == "succeeded" else _short(event.stop_reason, 60)
            c.print(f"  [{style}]■ {escape(name)} {event.status}[/] after {event.steps} steps: {detail}")
        elif isinstance(event, ToolCallFinished) and event.status == "error":
            name = self._names.get(event.agent_id, event.agent_id)
            c.print(f"    [dim]{escape(name)}: {escape(event.tool)} error: {_short(event.error, 70)}[/]")
        elif isinstance(event, RunFinished):
            style = _STATUS_STYLE.get(event.status, "white")
            c.print(
                f"[bold {style}]{event.status}[/] in {event.wall_time_s:.1f}s: {event.num_agents} agents, "
                f"{event.num_tool_calls} tool calls, {event.critical_steps} critical steps, "
                f"{event.usage.input_tokens}+{event.usage.output_tokens} tokens"
                + (f" ({escape(event.stop_reason)})" if event.stop_reason else "")
            )
