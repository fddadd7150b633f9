"""`swarm`: the command line, and the one composition root that wires concrete classes.

    swarm run TASK.toml [--model SPEC] [--json] [--db PATH] [limit flags]
    swarm runs list | swarm runs show RUN_ID [--json]
    swarm tui [--db PATH] [TASK.toml] [--model SPEC] [--model-name NAME]
    swarm serve --model DIR [--host H] [--port P] [--tensor-parallel-size N]
    swarm model init-tiny DIR [--int4] | info DIR | quantize SRC DST
    swarm demo [--seed N] [--entities K] [--json | --tui]   (the offline demo, demo/run.py)

Exit codes: 0 succeeded, 1 failed or over budget, 2 bad input, 130 cancelled. A user
mistake prints one line naming the file, flag or field and the problem; no traceback.
"""

from __future__ import annotations

import gc
import json
import shutil
import signal
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from model_runtime.cli import model_app, serve_command
from storage.errors import StorageError
from storage.store import TraceStore, default_db_path
from swarm.coordinator import Coordinator
from swarm.errors import SwarmError, TaskFileError
from swarm.events import FanOut, TraceSink
from swarm.launch import build_kits, open_coordinator, plan_run
from swarm.limits import Limits
from swarm.model_spec import parse_model_spec
from swarm.progress import ProgressPrinter
from swarm.recorder import Recorder
from swarm.summary import run_summary
from swarm.task_file import TaskFile, load_task

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
_EXIT_BY_STATUS = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "budget_exceeded": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

app = typer.Typer(
    help="moe-swarm: a coordinator agent that runs sub-agents in parallel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Browse recorded runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
# The embedded runtime's own commands; their modules import torch only inside commands.
app.add_typer(model_app, name="model", help="Make, inspect and quantize Kimi-format checkpoints.")
app.command("serve", help="Serve a checkpoint as an OpenAI-compatible endpoint.")(serve_command)

DbOption = Annotated[Path | None, typer.Option("--db", help="Trace database (default $SWARM_HOME/traces.db).")]


def event_loop_options() -> dict[str, Any]:
    """uvloop where it is installed: it roughly halves the event loop's share of each call."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def tune_gc() -> None:
    """Rarer garbage collections for a run's process: a big swarm holds many live objects
    (every agent's history), and with the default thresholds the collector kept walking
    them; a young collection every 100,000 allocations instead of 700 cut the client's CPU
    in bench/swarm_overhead.py's 1,000-agent run by 5-10%. Memory is freed by reference
    counting as before; only cycles wait longer."""
    gc.set_threshold(100_000, 50, 100)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _open_store(db: Path | None) -> TraceStore:
    try:
        return TraceStore(db or default_db_path())
    except StorageError as exc:
        _fail(str(exc))


# -- swarm run ---------------------------------------------------------------------


def _apply_flags(task: TaskFile, mode: str | None, overrides: dict[str, Any]) -> TaskFile:
    updates = {key: value for key, value in overrides.items() if value is not None}
    try:
        limits = Limits.model_validate({**task.limits.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        raise TaskFileError(f"{flag}: {first['msg'][:1].lower()}{first['msg'][1:]}") from None
    task_section = task.task
    if mode is not None:
        if mode not in ("swarm", "single"):
            raise TaskFileError(f"--mode: must be 'swarm' or 'single', not {mode!r}")
        task_section = task_section.model_copy(update={"mode": mode})
    return task.model_copy(update={"limits": limits, "task": task_section})


async def _run_with_signals(coordinator: Coordinator) -> Any:
    """Runs the coordinator; the first SIGINT/SIGTERM cancels the run cleanly."""
    outcome = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    print(f"\n{name}: cancelling the run (again to force quit)", file=sys.stderr)
                    coordinator.cancel(f"cancelled by user ({name})")
                    signal.signal(signum, signal.SIG_DFL)

        group.start_soon(watch)
        outcome = await coordinator.run()
        group.cancel_scope.cancel()
    return outcome


@app.command("run")
def run_command(
    task_file: Annotated[Path, typer.Argument(help="Task file (TOML).", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", help="openai:<url> | local:<dir> | scripted:<file>")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Model name sent to the endpoint.")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")] = False,
    mode: Annotated[str | None, typer.Option("--mode", help="swarm | single")] = None,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency")] = None,
    max_subagents: Annotated[int | None, typer.Option("--max-subagents")] = None,
    max_tool_calls: Annotated[int | None, typer.Option("--max-tool-calls")] = None,
    timeout_s: Annotated[float | None, typer.Option("--timeout-s")] = None,
) -> None:
    """Run a task file: a coordinator and its sub-agents, traced to SQLite."""
    try:
        task = _apply_flags(
            load_task(task_file), mode,
            {"max_concurrency": max_concurrency, "max_subagents": max_subagents,
             "max_tool_calls": max_tool_calls, "timeout_s": timeout_s},
        )
        plan = plan_run(task, model, model_name, source=str(task_file))
    except SwarmError as exc:
        _fail(str(exc))
    store = _open_store(db)
    sinks: list[TraceSink] = []
    try:
        with Recorder(store, secrets=plan.secrets) as recorder:
            sinks.append(recorder)
            if not as_json:
                sinks.append(ProgressPrinter())
            run_id = uuid.uuid4().hex[:16]
            kits = build_kits(plan, store.path.parent / "work" / run_id)

            async def main() -> Any:
                async with open_coordinator(plan, kits, FanOut(sinks), run_id=run_id) as coordinator:
                    return await _run_with_signals(coordinator)

            tune_gc()
            outcome = anyio.run(main, backend_options=event_loop_options())
            recorder.flush()
    except TaskFileError as exc:
        _fail(str(exc))
    except StorageError as exc:
        _fail(str(exc), EXIT_FAILED)
    summary = run_summary(store, outcome.run_id)
    if as_json:
        print(json.dumps(summary))
    else:
        if summary["final_answer"]:
            print(summary["final_answer"])
        print(f"trace: swarm runs show {outcome.run_id} --db {store.path}", file=sys.stderr)
    raise typer.Exit(_EXIT_BY_STATUS[outcome.status])


# -- swarm runs ------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


@runs_app.command("list")
def runs_list(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recorded runs, newest first."""
    store = _open_store(db)
    rows = store.list_runs(limit)
    if as_json:
        print(json.dumps([run_summary(store, row.id) for row in rows]))
        return
    width = shutil.get_terminal_size((120, 24)).columns
    header = f"{'run':<16}  {'started':<11}  {'status':<15}  {'agents':>6}  {'tools':>6}  {'crit':>5}  {'tokens':>8}  {'time':>7}  prompt"
    print(header[:width] if width > 40 else header)
    for row in rows:
        time_s = f"{row.wall_time_s:.1f}s" if row.wall_time_s is not None else "-"
        line = (
            f"{row.id:<16}  {_when(row.started_at)[5:16]:<11}  {row.status:<15}  {row.num_agents:>6}  "
            f"{row.num_tool_calls:>6}  {row.critical_steps:>5}  {row.input_tokens + row.output_tokens:>8}  "
            f"{time_s:>7}  {(row.prompt.splitlines() or [''])[0]}"
        )
        print(line if len(line) <= width else line[: max(width - 1, 80)] + "…")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix of it.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run: its summary, agents and outcome."""
    store = _open_store(db)
    try:
        summary = run_summary(store, run_id)
    except StorageError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(summary))
        return
    console = Console()
    run = store.get_run(summary["run_id"])
    console.print(f"[bold]run {run.id}[/]  {run.status}  {run.mode}  {run.model}  started {_when(run.started_at)}")
    if run.stop_reason:
        console.print(f"stop reason: {run.stop_reason}")
    console.print(
        f"{run.num_agents} agents, {run.num_tool_calls} tool calls, {run.critical_steps} critical steps, "
        f"{run.input_tokens}+{run.output_tokens} tokens, {run.wall_time_s or 0:.1f}s"
    )
    table = Table("agent", "name", "role", "status", "steps", "tools", "stop reason", box=None, header_style="bold")
    for agent in store.agents(run.id):
        table.add_row(
            agent.id.rpartition(".")[2], agent.name, agent.role, agent.status, str(agent.steps),
            str(agent.num_tool_calls), agent.stop_reason or "",
        )
    console.print(table)
    console.print("[bold]prompt[/]", run.prompt, "[bold]final answer[/]", run.final_answer or "-", sep="\n")


# -- swarm tui -------------------------------------------------------------------


@app.command("tui")
def tui_command(
    task_file: Annotated[Path | None, typer.Argument(help="Task file (TOML) to start at once.", show_default=False)] = None,
    db: DbOption = None,
    model: Annotated[str | None, typer.Option("--model", help="openai:<url> | local:<dir> | scripted:<file>")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Model name sent to the endpoint.")] = None,
) -> None:
    """The terminal UI: browse recorded runs, start and watch runs live."""
    plan = None
    try:
        if task_file is not None:
            plan = plan_run(load_task(task_file), model, model_name, source=str(task_file))
        elif model is not None:
            parse_model_spec(model)  # checked now; used as the new-run form's default
    except SwarmError as exc:
        _fail(str(exc))
    store = _open_store(db)
    from tui.app import SwarmApp  # lazily: `swarm run` never pays for Textual

    SwarmApp(store, plan=plan, default_model=model, default_model_name=model_name).run()


# -- swarm demo --------------------------------------------------------------------


@app.command("demo")
def demo_command(
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fresh fixture world and task.")] = 1,
    entities: Annotated[int, typer.Option("--entities", min=1, max=16, help="Entities to look up (1-16).")] = 4,
    model: Annotated[Path | None, typer.Option("--model", help="Checkpoint folder (default: the shipped demo model).")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    single: Annotated[bool, typer.Option("--single/--no-single", help="Also run the single-agent baseline.")] = True,
    tui: Annotated[bool, typer.Option("--tui", help="Watch the runs live in the terminal UI.")] = False,
    web_latency: Annotated[float, typer.Option("--web-latency", min=0.0, max=60.0, metavar="SECONDS",
                                               help="Simulate a remote site: the fixture server answers each request this much later (default 0: loopback as it is).")] = 0.0,
) -> None:
    """Offline end to end: a fresh fixture world, the shipped demo model, swarm then single agent."""
    if tui and as_json:
        _fail("--tui and --json cannot be used together: --json prints one object on stdout, --tui draws on it")
    from demo.run import DEFAULT_CHECKPOINT, describe, load_demo_model, run_demo  # torch, Playwright: only here

    checkpoint = model or DEFAULT_CHECKPOINT
    if not (checkpoint / "config.json").is_file():
        _fail(
            f"no demo checkpoint at {checkpoint} (no config.json there): pass the checkpoint folder that "
            "`python -m demo.train OUT_DIR` exports (OUT_DIR/checkpoint), or leave --model out for the shipped one"
        )
    store = _open_store(db)
    modes = ("swarm", "single") if single else ("swarm",)
    if tui:
        _demo_in_tui(store, seed, entities, load_demo_model(checkpoint), f"local:{checkpoint}", modes, web_latency)
    try:
        result = run_demo(seed=seed, num_entities=entities, model=load_demo_model(checkpoint), store=store,
                          model_label=f"local:{checkpoint}", modes=modes, web_latency_s=web_latency)  # fmt: skip
    except (SwarmError, StorageError) as exc:
        _fail(str(exc), EXIT_FAILED)
    print(json.dumps(result) if as_json else describe(result))
    raise typer.Exit(_EXIT_BY_STATUS[result["status"]])


def _demo_in_tui(store: TraceStore, seed: int, entities: int, model: Any, model_label: str, modes: tuple[str, ...],
                 web_latency_s: float) -> NoReturn:  # fmt: skip
    """`swarm demo --tui`: the runs in the TUI; the report is printed once it closes."""
    from demo.live import DemoJob
    from demo.run import describe
    from tui.app import SwarmApp

    job = DemoJob(seed=seed, num_entities=entities, model=model, model_label=model_label, modes=modes, web_latency_s=web_latency_s)
    SwarmApp(store, job=job).run()
    if job.result is None:  # closed (or a run stopped) before the demo ended
        print(f"the demo did not finish; its runs: swarm runs list --db {store.path}", file=sys.stderr)
        raise typer.Exit(EXIT_CANCELLED)
    print(describe(job.result))
    raise typer.Exit(_EXIT_BY_STATUS[job.result["status"]])


def main() -> None:
    app()
