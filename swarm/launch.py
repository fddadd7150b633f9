"""Launching a run: from a task file (or a bare prompt) and a model spec to a `Coordinator`.

Shared by the two front ends that start runs, `swarm run` and the TUI, so that both
validate input, build backends and kits, and wrap the model for retries the same way.
`plan_run` does everything that can fail on user input (raising `SwarmError` with one
clear line) before anything is recorded; `open_coordinator` builds the live objects.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from swarm.backends.retry import AdaptiveLimiter, RetryingModel, RetryPolicy
from swarm.coordinator import Coordinator, RunRequest
from swarm.errors import TaskFileError
from swarm.events import TraceSink
from swarm.model import ChatModel
from swarm.model_spec import ModelSpec, parse_model_spec
from swarm.task_file import TaskFile, parse_task
from swarm.tooling import ToolKit
from swarm.toolkits import default_registry


@dataclass(frozen=True)
class RunPlan:
    """A validated run, ready to start: the task, its model, and what to record."""

    task: TaskFile
    spec: ModelSpec
    chat_model: ChatModel
    secrets: tuple[str, ...]
    request: RunRequest


def task_from_prompt(prompt: str, *, mode: str = "swarm") -> TaskFile:
    """A task with only a prompt, as if from a one-line task file."""
    return parse_task({"task": {"prompt": prompt, "mode": mode}}, source="prompt")


def build_model(spec: ModelSpec, task: TaskFile, model_name: str | None) -> tuple[ChatModel, list[str]]:
    """The backend for a spec, and the secret values that must never be recorded."""
    section = task.model
    for key, default in (("tensor_parallel_size", 1), ("speculative_tokens", 0)):
        if getattr(section, key) != default and spec.kind != "local":
            raise TaskFileError(f"[model].{key} applies to local: models only, not {spec.kind}:")
    if spec.kind == "scripted":
        from swarm.backends.scripted import ScriptedChatModel, load_script

        return ScriptedChatModel(load_script(spec.target), name=model_name or section.name or "scripted"), []
    if spec.kind == "openai":
        from swarm.backends.openai_compat import OpenAIChatModel

        key_env = section.api_key_env or "OPENAI_API_KEY"
        api_key = os.environ.get(key_env)
        if section.api_key_env and not api_key:
            raise TaskFileError(f"[model].api_key_env: environment variable {key_env} is not set")
        name = model_name or section.name
        if not name:
            raise TaskFileError("no model name: give --model-name or [model].name (e.g. kimi-k2.5)")
        model = OpenAIChatModel(
            spec.target, model_name=name, api_key=api_key, temperature=section.temperature,
            max_tokens=section.max_tokens, stream=section.stream,
        )
        return model, [api_key] if api_key else []
    from swarm.backends.local import load_local_model  # imports torch: only for local:

    model = load_local_model(
        spec.target, model_name=model_name or section.name,
        temperature=section.temperature if section.temperature is not None else 1.0,
        max_tokens=section.max_tokens, tensor_parallel_size=section.tensor_parallel_size,
        speculative_tokens=section.speculative_tokens,
    )
    return model, []


def plan_run(task: TaskFile, model: str | None = None, model_name: str | None = None, *, source: str = "task") -> RunPlan:
    """Validates the model choice and builds the backend; raises `SwarmError` on bad input."""
    spec_text = model or task.model.spec
    if not spec_text:
        raise TaskFileError(f"{source}: no model: give --model or [model].spec")
    spec = parse_model_spec(spec_text)
    chat_model, secrets = build_model(spec, task, model_name)
    request = RunRequest(
        prompt=task.task.prompt, mode=task.task.mode, limits=task.limits,
        system_prompt=task.task.system_prompt, model_label=spec.label,
        config_json=task.model_dump_json(exclude={"model": {"spec"}}),
    )
    return RunPlan(task=task, spec=spec, chat_model=chat_model, secrets=tuple(secrets), request=request)


def build_kits(plan: RunPlan, workdir: Path) -> list[ToolKit]:
    """The tool kits the task enables, working under `workdir`."""
    tools = plan.task.tools
    return default_registry().build(tools.enabled, tools.options(), workdir)


@asynccontextmanager
async def open_coordinator(
    plan: RunPlan,
    kits: Sequence[ToolKit],
    sink: TraceSink,
    *,
    run_id: str,
    stream_text: bool = False,
) -> AsyncIterator[Coordinator]:
    """A coordinator over a retrying model; the model's connections close on exit."""
    # every sub-agent may have a call in flight, plus the orchestrator
    limiter = AdaptiveLimiter(plan.task.limits.max_concurrency + 1)
    retrying = RetryingModel(plan.chat_model, policy=RetryPolicy(), limiter=limiter)
    try:
        yield Coordinator(plan.request, retrying, kits, sink, run_id=run_id, stream_text=stream_text)
    finally:
        with anyio.CancelScope(shield=True):
            await retrying.aclose()
