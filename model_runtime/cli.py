"""`swarm model ...` commands: `info DIR` and `quantize SRC DST`.

The lead mounts `model_app` under the `swarm` entry point. This module imports no torch
at import time (the commands import it when they run), so `swarm --help` stays fast. Bad
input ends with a one-line `error: ...` on stderr and exit code 2, never a traceback.
To add a command: a function decorated with `@model_app.command()`, heavy imports inside,
errors funnelled through `_fail_on_bad_input`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from model_runtime.engine.speculative import MAX_SPECULATIVE_TOKENS
from model_runtime.errors import RuntimeEngineError

model_app = typer.Typer(help="Inspect and convert Kimi K2 / DeepSeek-V3 checkpoints.", no_args_is_help=True)

_DTYPES = ("bfloat16", "float16", "float32")


@contextmanager
def _fail_on_bad_input() -> Iterator[None]:
    try:
        yield
    except RuntimeEngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _human_bytes(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:,.0f} {unit}" if unit == "B" else f"{num_bytes:,.2f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def _human_count(count: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit} ({count:,})"
    return f"{count:,}"


@model_app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (config.json + safetensors)."),
    dtype: str = typer.Option("bfloat16", help=f"Dtype the runtime would load it in: {', '.join(_DTYPES)}."),
) -> None:
    """Parameter counts (total, active per token), resident bytes by dtype, KV bytes per token."""
    if dtype not in _DTYPES:
        typer.echo(f"error: --dtype must be one of {', '.join(_DTYPES)}", err=True)
        raise typer.Exit(2)
    with _fail_on_bad_input():
        import torch

        from model_runtime.info import model_info

        found = model_info(checkpoint, dtype=getattr(torch, dtype))
    c = found.config
    quant = c.quantization.method if c.quantization else "none"
    typer.echo(f"model_type         {c.model_type}{' (kimi_k25 wrapper, vision skipped)' if c.weight_prefix else ''}")
    typer.echo(f"layers / hidden    {c.num_hidden_layers} / {c.hidden_size}")
    experts = f"{c.n_routed_experts} routed (top {c.num_experts_per_tok}), {c.n_shared_experts} shared"
    typer.echo(f"experts            {experts}")
    typer.echo(f"quantization       {quant}")
    typer.echo(f"parameters         {_human_count(found.num_params)}")
    typer.echo(f"active per token   {_human_count(found.num_active_params)}")
    typer.echo(f"resident ({dtype})  {_human_bytes(found.resident_bytes)}")
    for name, num_bytes in sorted(found.resident_bytes_by_dtype.items()):
        typer.echo(f"  {name:<16} {_human_bytes(num_bytes)}")
    typer.echo(f"KV cache per token {_human_bytes(found.kv_bytes_per_token)} (MLA latent, all layers)")
    typer.echo(f"on disk            {_human_bytes(found.checkpoint_bytes)}")


@model_app.command()
def quantize(
    src: Path = typer.Argument(..., help="bf16/fp32/fp8 checkpoint folder."),
    dst: Path = typer.Argument(..., help="Output folder for the INT4-expert checkpoint."),
    group_size: int = typer.Option(32, help="INT4 group size (Kimi ships 32)."),
) -> None:
    """Rewrite SRC's routed experts as compressed-tensors INT4 (pack-quantized) into DST."""
    if group_size <= 0 or group_size % 8:
        typer.echo("error: --group-size must be a positive multiple of 8", err=True)
        raise typer.Exit(2)
    if dst.exists() and any(dst.iterdir()):
        typer.echo(f"error: {dst} exists and is not empty", err=True)
        raise typer.Exit(2)
    with _fail_on_bad_input():
        from model_runtime.quant.convert import quantize_checkpoint

        quantize_checkpoint(src, dst, group_size=group_size)
    typer.echo(f"wrote {dst}")


@model_app.command("init-tiny")
def init_tiny_command(
    directory: Path = typer.Argument(..., help="Folder to write the checkpoint into (created; must be empty)."),
    int4: bool = typer.Option(False, "--int4", help="Store routed experts as INT4 (compressed-tensors), as Kimi K2.5 ships them."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
) -> None:
    """Write a tiny random Kimi-format checkpoint with its tokenizer (for tests and demos)."""
    if directory.exists() and any(directory.iterdir()):
        typer.echo(f"error: {directory} exists and is not empty", err=True)
        raise typer.Exit(2)
    with _fail_on_bad_input():
        from model_runtime.init_tiny import init_tiny

        init_tiny(directory, int4=int4, seed=seed)
    typer.echo(f"wrote {directory}")


def serve_command(
    model: Path = typer.Option(..., "--model", help="Checkpoint folder (config.json, safetensors, tiktoken.model)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SWARM_SERVE_API_KEY", help="Require this bearer token."),
    model_name: str | None = typer.Option(None, "--model-name", help="Name served in /v1/models (default: the folder's name)."),
    dtype: str | None = typer.Option(None, help=f"{', '.join(_DTYPES)} (default: bfloat16 on GPU, float32 on CPU)."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", "--tp", help="Split the model over this many processes (GPUs): heads and MLPs tensor-parallel, experts expert-parallel."),
    speculative_tokens: int = typer.Option(0, "--speculative-tokens", help="Greedy requests (temperature 0): up to this many n-gram draft tokens a step, checked by the model (same output, fewer steps on copy-heavy text); 0: off."),
) -> None:
    """Serve a checkpoint over an OpenAI-compatible HTTP API (mount as `swarm serve`)."""
    if dtype is not None and dtype not in _DTYPES:
        typer.echo(f"error: --dtype must be one of {', '.join(_DTYPES)}", err=True)
        raise typer.Exit(2)
    if tensor_parallel_size < 1:
        typer.echo("error: --tensor-parallel-size must be at least 1", err=True)
        raise typer.Exit(2)
    if not 0 <= speculative_tokens <= MAX_SPECULATIVE_TOKENS:
        typer.echo(f"error: --speculative-tokens must be between 0 and {MAX_SPECULATIVE_TOKENS}", err=True)
        raise typer.Exit(2)
    if not (model / "config.json").is_file():
        typer.echo(f"error: {model} has no config.json", err=True)
        raise typer.Exit(2)
    with _fail_on_bad_input():
        from model_runtime.server import serve

        serve(str(model), host=host, port=port, api_key=api_key, model_name=model_name, dtype=dtype, tensor_parallel_size=tensor_parallel_size, speculative_tokens=speculative_tokens)
