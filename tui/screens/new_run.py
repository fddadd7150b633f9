"""`NewRunScreen`: the new-run form (a prompt or a task file, and a model spec).

Validates the way `swarm run` does (`swarm.launch.plan_run`), shows a mistake as one line
under the form, and dismisses with the `RunPlan` to start; Escape dismisses with None.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from swarm.errors import SwarmError, TaskFileError
from swarm.launch import RunPlan, plan_run, task_from_prompt
from swarm.task_file import load_task


def plan_from_form(prompt_or_path: str, model: str, model_name: str) -> RunPlan:
    """The plan for what the form holds; raises `SwarmError` with one clear line."""
    text = prompt_or_path.strip()
    if not text:
        raise TaskFileError("give a prompt, or the path of a task file (.toml)")
    if text.endswith(".toml") and "\n" not in text:
        path = Path(text).expanduser()
        task, source = load_task(path), str(path)
    else:
        task, source = task_from_prompt(text), "prompt"
    return plan_run(task, model.strip() or None, model_name.strip() or None, source=source)


class NewRunScreen(ModalScreen[RunPlan | None]):
    """The form; its fields start from the `swarm tui --model/--model-name` defaults."""

    CSS_PATH = "new_run.tcss"
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, default_model: str | None = None, default_model_name: str | None = None) -> None:
        super().__init__()
        self.default_model = default_model or ""
        self.default_model_name = default_model_name or ""

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Static("New run", id="form-title")
            yield Label("Prompt, or a task file path (.toml)")
            yield Input(placeholder="Compare three sorting algorithms…", id="prompt")
            yield Label("Model spec (optional with a task file that names one)")
            yield Input(self.default_model, placeholder="openai:http://127.0.0.1:8000/v1", id="model")
            yield Label("Model name")
            yield Input(self.default_model_name, placeholder="kimi-k2.5", id="model-name")
            yield Static("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Start", variant="primary", id="start")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.submit()
        else:
            self.dismiss(None)

    def submit(self) -> None:
        value = {name: self.query_one(f"#{name}", Input).value for name in ("prompt", "model", "model-name")}
        try:
            plan = plan_from_form(value["prompt"], value["model"], value["model-name"])
        except SwarmError as exc:
            self.query_one("#error", Static).update(f"error: {exc}")
            return
        self.dismiss(plan)

    def action_close(self) -> None:
        self.dismiss(None)
