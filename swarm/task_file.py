"""Task files: TOML, validated with pydantic. Only `[task].prompt` is required.

    [task]    prompt, mode ("swarm" | "single"), system_prompt
    [model]   spec, name, api_key_env, temperature, max_tokens, tensor_parallel_size and
              speculative_tokens (local: only)
    [limits]  see `swarm.limits.Limits`
    [tools]   enabled = [...], plus one `[tools.NAME]` table of options per kit

Every problem becomes one `TaskFileError` line naming the file, the field and the problem.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swarm.errors import TaskFileError
from swarm.limits import Limits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSection(_Strict):
    prompt: str
    mode: Literal["swarm", "single"] = "swarm"
    system_prompt: str | None = None  # replaces the built-in orchestrator/agent prompt

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class ModelSection(_Strict):
    spec: str | None = None  # openai:URL | local:DIR | scripted:FILE
    name: str | None = None
    api_key_env: str | None = None  # the variable holding the key, never the key itself
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    stream: bool = True
    tensor_parallel_size: int = Field(default=1, ge=1)  # local: only; processes (GPUs) the model is split over
    # local: only; n-gram drafts a step for greedy requests, at most model_runtime.engine.speculative.MAX_SPECULATIVE_TOKENS (a test ties the two)
    speculative_tokens: int = Field(default=0, ge=0, le=16)


class ToolsSection(BaseModel):
    """`enabled` kits, and each kit's options as an extra `[tools.NAME]` table."""

    model_config = ConfigDict(extra="allow")

    enabled: list[str] = Field(default_factory=list)

    def options(self) -> dict[str, dict[str, Any]]:
        extra = self.model_extra or {}
        return {name: value for name, value in extra.items() if isinstance(value, dict)}

    @field_validator("enabled")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a tool more than once")
        return value


class TaskFile(_Strict):
    task: TaskSection
    model: ModelSection = Field(default_factory=ModelSection)
    limits: Limits = Field(default_factory=Limits)
    tools: ToolsSection = Field(default_factory=ToolsSection)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a known field"
    else:
        message = message.removeprefix("Value error, ")
    head, _, field = where.partition(".")
    location = f"[{head}].{field}" if field else f"[{head}]"
    return f"{location}: {message[:1].lower()}{message[1:]}"


def parse_task(data: dict[str, Any], *, source: str = "task") -> TaskFile:
    """Validates already-parsed TOML data; `source` names the file in messages."""
    try:
        return TaskFile.model_validate(data)
    except ValidationError as exc:
        raise TaskFileError(f"{source}: {_describe(exc)}") from None


def load_task(path: str | Path) -> TaskFile:
    """Reads and validates a task file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such task file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"{path}: cannot read task file ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{path}: not valid TOML ({exc})") from None
    return parse_task(data, source=str(path))
