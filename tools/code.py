"""Sandboxed Python execution: `run_python` and the model's `python` tool.

Each call runs the code in a fresh interpreter process inside bubblewrap (`bwrap`):

What the sandbox guarantees (on Linux with bubblewrap, as tested in tests/tools):
- Network: a new network namespace with only its own loopback; the host's loopback
  services and the internet are unreachable.
- Processes: a new PID namespace; the code sees only its own processes in `/proc`,
  never the host's, and when the call ends (normal exit, timeout or cancellation) the
  namespace's init dies and the kernel kills everything the code started.
- Files: a read-only view of `/usr` (and the `/bin`, `/lib*` links into it) and of the
  interpreter's own prefix; no `/etc`, `/home`, `/root`, `/work` or host `/tmp`. The
  workspace (mounted at `/workspace`) is the only writable host folder; `/tmp` is a
  small private tmpfs.
- Environment: empty apart from `PATH`, `HOME` and `LANG`; no API keys (bwrap itself
  is started with an empty environment, so no process in the sandbox ever had one).
- Limits (rlimits set before the code runs, which it cannot raise): address space
  (`memory_mb`, per process), number of processes, CPU seconds, size of any one file,
  open files. When run as root, the code runs as an unprivileged uid of its own with
  no capabilities, so the process limit is enforced by the kernel.
- A wall-clock timeout that kills the whole process tree; output capped in size with
  a note when cut.

What it does not guarantee:
- It is not a VM: the code shares the host kernel, so a kernel exploit escapes it.
- Memory is limited per process, not in total: up to `max_processes` processes can
  each use `memory_mb`. The workspace's total size is not limited (only file size).
- CPU share is not limited within the timeout; a busy loop takes a core until killed.
- The process limit is per sandbox uid, which is per workspace: concurrent calls in
  one workspace share it. Without root it counts all processes of the caller's uid.
- The read-only view of `/usr` and the interpreter can be read (not secrets, usually).

Errors: `SandboxUnavailableError` (a `ToolError` subclass) when bubblewrap is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

from tools.base import FunctionTool, ToolError, argument, schema

SANDBOX_UID_MIN = 1 << 24
"""Sandbox uids are drawn above this, far from any real account's uid."""

_SANDBOX_DIR = "/workspace"

# Runs first inside the sandbox, as a trusted prologue: reads the code from stdin, sets
# the rlimits, drops to the sandbox uid, then runs the code as `__main__`.
_BOOTSTRAP = """\
import json, linecache, os, resource, sys
cfg = json.loads(sys.argv[1])
src = sys.stdin.buffer.read().decode("utf-8", "replace")
null = os.open("/dev/null", os.O_RDONLY); os.dup2(null, 0); os.close(null)
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if cfg["uid"] is not None:
    os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
del cfg, null, name, value
sys.argv = ["<code>"]; sys.path.insert(0, os.getcwd())
linecache.cache["<code>"] = (len(src), None, src.splitlines(True), "<code>")
try:
    exec(compile(src, "<code>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit:
    raise
except BaseException as error:  # shown without this prologue's frame
    import traceback
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""


class SandboxUnavailableError(ToolError):
    """bubblewrap is not installed, so code cannot be run safely."""


@dataclass(frozen=True)
class ExecResult:
    """What a sandboxed run produced; output already capped."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call limits; every field is a hard kernel or wall-clock limit."""

    timeout_s: float = 30.0
    memory_mb: int = 512
    max_processes: int = 64
    max_file_mb: int = 64
    max_open_files: int = 256
    max_output_bytes: int = 32_000
    tmp_mb: int = 16


@dataclass(frozen=True)
class Interpreter:
    """The Python the sandbox runs and the folder it needs read-only (its prefix)."""

    executable: Path = field(default_factory=lambda: Path(getattr(sys, "_base_executable", sys.executable)))
    prefix: Path = field(default_factory=lambda: Path(sys.base_prefix))


async def run_python(
    code: str,
    *,
    workspace: Path,
    timeout_s: float = 30.0,
    memory_mb: int = 512,
    limits: SandboxLimits | None = None,
    interpreter: Interpreter | None = None,
) -> ExecResult:
    """Runs `code` in a fresh sandboxed interpreter with `workspace` as its writable cwd."""
    limits = limits or SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    interpreter = interpreter or Interpreter()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError("bubblewrap (bwrap) is not installed; cannot run code")
    workspace.mkdir(parents=True, exist_ok=True)
    uid = _sandbox_uid(workspace)
    command = _bwrap_command(bwrap, workspace.resolve(), interpreter, limits, uid)
    process = await anyio.open_process(command, env={}, start_new_session=True)
    outputs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    try:
        with anyio.move_on_after(limits.timeout_s) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_feed, process, code.encode())
                tg.start_soon(_drain, process.stdout, outputs["stdout"], limits.max_output_bytes)
                tg.start_soon(_drain, process.stderr, outputs["stderr"], limits.max_output_bytes)
            await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await _kill_tree(process)
            await process.aclose()
    timed_out = scope.cancelled_caught
    return ExecResult(
        stdout=_decode(outputs["stdout"], limits.max_output_bytes),
        stderr=_decode(outputs["stderr"], limits.max_output_bytes)
        + (f"\n[timed out after {limits.timeout_s:g} s; process tree killed]" if timed_out else ""),
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
    )


def _sandbox_uid(workspace: Path) -> int | None:
    """The unprivileged uid that owns the workspace, chosen and set on first use (root only)."""
    if os.geteuid() != 0:
        return None
    owner = workspace.stat().st_uid
    if owner >= SANDBOX_UID_MIN:
        return owner
    uid = SANDBOX_UID_MIN + secrets.randbelow(1 << 20)
    os.chown(workspace, uid, uid)
    return uid


def _bwrap_command(
    bwrap: str, workspace: Path, interpreter: Interpreter, limits: SandboxLimits, uid: int | None
) -> list[str]:
    args = [
        bwrap,
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        # The code is the namespace's init: bwrap returns only once it has exited, which
        # the kernel completes only after every other process in the namespace is gone.
        "--as-pid-1", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    prefix = interpreter.prefix.resolve()
    if not prefix.is_relative_to("/usr"):
        # bwrap creates missing parents as 0700 root, which the sandbox uid could not cross.
        for parent in reversed(prefix.parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(prefix), str(prefix)]
    args += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.tmp_mb << 20), "--perms", "1777", "--tmpfs", "/tmp",
        "--bind", str(workspace), _SANDBOX_DIR, "--chdir", _SANDBOX_DIR,
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", _SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8",
    ]  # fmt: skip
    if uid is not None:
        # Root keeps every capability in bwrap by default; the prologue needs only these
        # two to drop to the sandbox uid, which then clears them.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    rlimits = {
        "RLIMIT_AS": limits.memory_mb << 20,
        "RLIMIT_NPROC": limits.max_processes + (0 if uid is not None else _num_own_processes()),
        "RLIMIT_CPU": int(limits.timeout_s) + 1,
        "RLIMIT_FSIZE": limits.max_file_mb << 20,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_CORE": 0,
    }
    config = json.dumps({"rlimits": rlimits, "uid": uid})
    executable = str(interpreter.executable)
    return [*args, "--", executable, "-I", "-B", "-c", _BOOTSTRAP, config]


def _num_own_processes() -> int:
    """Processes (threads included, as RLIMIT_NPROC counts) of the caller's uid."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += len(os.listdir(entry / "task"))
        except OSError:
            continue
    return count


async def _feed(process: Process, code: bytes) -> None:
    assert process.stdin is not None
    try:
        await process.stdin.send(code)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the interpreter died before reading its code; its stderr says why
    finally:
        await process.stdin.aclose()


async def _drain(stream: ByteReceiveStream | None, sink: bytearray, max_bytes: int) -> None:
    """Reads to EOF, keeping the first `max_bytes` (+1 so the cut shows) and discarding the rest."""
    assert stream is not None
    async for chunk in stream:
        room = max_bytes + 1 - len(sink)
        if room > 0:
            sink += chunk[:room]


async def _kill_tree(process: Process) -> None:
    """Kills the sandbox's PID-namespace init (the code), so the kernel kills all in it.

    bwrap then reaps the init and exits, so once it has exited nothing the code started
    is left. Killing only bwrap would leave the init to die later, on its parent-death
    signal, racing the caller.
    """
    if process.returncode is None:
        for pid in _children(process.pid):
            _kill(pid)
        with anyio.move_on_after(5):
            await process.wait()
        _kill(process.pid)
    await process.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _decode(data: bytearray, max_bytes: int) -> str:
    text = bytes(data[:max_bytes]).decode("utf-8", "replace")
    if len(data) > max_bytes:
        text += f"\n[output cut at {max_bytes} bytes]"
    return text


def python_tool(workspace: Path, limits: SandboxLimits, interpreter: Interpreter | None = None) -> FunctionTool:
    """The model's `python(code)` tool, running in `workspace` under `limits`."""

    async def call(arguments: dict[str, object]) -> str:
        code = argument(arguments, "code", str)
        result = await run_python(code, workspace=workspace, limits=limits, interpreter=interpreter)
        if result.timed_out or result.exit_code != 0:
            raise ToolError(format_result(result))
        return format_result(result)

    return FunctionTool(
        name="python",
        description=(
            "Run Python 3 code in a sandbox and return its stdout and stderr. No network. "
            f"The current folder {_SANDBOX_DIR} persists between calls; print what you need. "
            f"Limits: {limits.timeout_s:g} s, {limits.memory_mb} MB."
        ),
        parameters=schema({"code": {"type": "string", "description": "Python source"}}, ["code"]),
        function=call,
    )


def format_result(result: ExecResult) -> str:
    """The observation text for one run: output, then how it ended if not cleanly."""
    parts = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append(f"[stderr]\n{result.stderr.rstrip()}")
    if result.timed_out:
        parts.append("[timed out]")
    elif result.exit_code != 0:
        parts.append(f"[exit code {result.exit_code}]")
    return "\n".join(parts) or "[no output]"
