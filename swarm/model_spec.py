"""Model specs: `openai:<base_url>`, `local:<checkpoint_dir>`, `scripted:<script_file>`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from swarm.errors import ModelSpecError

SpecKind = Literal["openai", "local", "scripted"]
_KINDS: tuple[SpecKind, ...] = ("openai", "local", "scripted")


@dataclass(frozen=True)
class ModelSpec:
    kind: SpecKind
    target: str  # base URL, checkpoint folder or script file

    @property
    def label(self) -> str:
        """The spec as recorded in traces: credentials and query strings removed."""
        return f"{self.kind}:{redact_url(self.target) if self.kind == 'openai' else self.target}"


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_model_spec(text: str) -> ModelSpec:
    kind, sep, target = text.partition(":")
    if not sep or kind not in _KINDS or not target:
        raise ModelSpecError(
            f"model spec {text!r} is not one of openai:<base_url>, local:<checkpoint_dir>, scripted:<script_file>"
        )
    if kind == "openai":
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelSpecError(f"model spec {text!r}: the base URL must be http(s)://host[:port]/path")
    return ModelSpec(kind=kind, target=target)  # type: ignore[arg-type]
