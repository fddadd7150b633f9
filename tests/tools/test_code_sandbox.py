"""The Python sandbox: it runs code, and a suite of escape attempts stays contained."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tools.base import ToolError
from tools.code import ExecResult, SandboxLimits, python_tool, run_python

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


async def run(code: str, workspace: Path, **limits: float) -> ExecResult:
    return await run_python(code, workspace=workspace, limits=SandboxLimits(**{"timeout_s": 10, **limits}))


def host_processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def sandbox_uid_processes(workspace: Path) -> list[int]:
    uid = workspace.stat().st_uid
    if uid == os.getuid():
        return []  # not run as root: no uid of its own to look for
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _owner(entry) == uid
    ]


def _owner(entry: Path) -> int | None:
    try:
        return entry.stat().st_uid
    except OSError:
        return None


def assert_host_fine() -> None:
    done = subprocess.run([sys.executable, "-c", "print('alive')"], capture_output=True, text=True)
    assert done.stdout == "alive\n"


async def test_runs_code_and_captures_output(workspace: Path) -> None:
    result = await run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)", workspace)
    assert result == ExecResult(stdout="hello\n", stderr="oops\n", exit_code=0, timed_out=False)


async def test_exception_gives_traceback_and_exit_code(workspace: Path) -> None:
    result = await run("x = 1\n1 / 0", workspace)
    assert result.exit_code == 1
    assert "ZeroDivisionError" in result.stderr and "1 / 0" in result.stderr


async def test_workspace_persists_and_is_writable(workspace: Path) -> None:
    await run("open('data.txt', 'w').write('42')", workspace)
    result = await run("print(open('data.txt').read())", workspace)
    assert result.stdout == "42\n"
    assert (workspace / "data.txt").read_text() == "42"


async def test_python_tool_raises_tool_error_on_failure(workspace: Path) -> None:
    tool = python_tool(workspace, SandboxLimits(timeout_s=10))
    assert await tool({"code": "print(6 * 7)"}) == "42"
    with pytest.raises(ToolError, match="NameError"):
        await tool({"code": "undefined_name"})


async def test_no_network_to_host_loopback(workspace: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = f"""
import socket
print(sorted(name for _, name in socket.if_nameindex()))
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("CONNECTED")
except OSError as error:
    print("refused", type(error).__name__)
try:
    socket.create_connection(("10.0.0.1", 80), timeout=2)
    print("CONNECTED")
except OSError as error:
    print("refused", type(error).__name__)
"""
        result = await run(code, workspace)
        with pytest.raises(TimeoutError):
            server.accept()
    assert result.stdout.splitlines()[0] == "['lo']"
    assert "CONNECTED" not in result.stdout and result.stdout.count("refused") == 2


async def test_cannot_read_host_files_outside_workspace(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    code = f"""
import os
for path in [{str(secret)!r}, "/etc/passwd", "/etc/shadow", "/root/.bashrc", "/home", "/work", {str(Path.cwd())!r}]:
    try:
        print(path, "READ", open(path).read()[:20] if os.path.isfile(path) else os.listdir(path))
    except OSError as error:
        print(path, "denied", type(error).__name__)
print(sorted(os.listdir("/")))
"""
    result = await run(code, workspace)
    assert "TOP-SECRET" not in result.stdout and "READ" not in result.stdout, result.stdout
    assert "etc" not in result.stdout.splitlines()[-1]


async def test_cannot_write_outside_workspace(workspace: Path, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    code = f"""
for path in [{str(target)!r}, "/usr/planted", "/planted", "/dev/shm/planted", "/proc/planted",
             "/usr/lib/python3/planted"]:
    try:
        open(path, "w").write("x")
        print(path, "WROTE")
    except OSError as error:
        print(path, "denied", type(error).__name__)
"""
    result = await run(code, workspace)
    assert "WROTE" not in result.stdout, result.stdout
    assert not target.exists() and not Path("/usr/planted").exists()


async def test_cannot_see_parent_environment_or_other_processes(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_TEST_API_KEY", "sk-very-secret")
    code = """
import os
print(dict(os.environ))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            try:
                print(pid, name, open(f"/proc/{pid}/{name}", "rb").read())
            except OSError as error:
                print(pid, name, "denied")
"""
    result = await run(code, workspace)
    assert "sk-very-secret" not in result.stdout and "SWARM_TEST_API_KEY" not in result.stdout
    pids = {line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert len(pids) <= 3  # the code itself; none of the host's processes
    assert result.exit_code == 0


async def test_fork_bomb_is_contained(workspace: Path) -> None:
    started = time.monotonic()
    result = await run("import os\nwhile True:\n    os.fork()", workspace, timeout_s=10, max_processes=32)
    assert time.monotonic() - started < 12
    assert "BlockingIOError" in result.stderr or result.timed_out
    assert sandbox_uid_processes(workspace) == []
    assert_host_fine()


async def test_memory_bomb_is_contained(workspace: Path) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 2**20))"
    result = await run(code, workspace, memory_mb=256)
    assert "MemoryError" in result.stderr
    assert result.exit_code != 0 and not result.timed_out


async def test_infinite_loop_times_out(workspace: Path) -> None:
    started = time.monotonic()
    result = await run("while True:\n    pass", workspace, timeout_s=1.5)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < 4
    assert sandbox_uid_processes(workspace) == []


async def test_background_process_does_not_outlive_the_call(workspace: Path) -> None:
    marker = f"sandbox-leftover-{os.getpid()}-{time.monotonic_ns()}"
    code = f"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", {marker!r}])
    os._exit(0)
time.sleep(0.3)
print("spawned")
"""
    result = await run(code, workspace)
    assert result.stdout == "spawned\n"
    time.sleep(0.2)
    assert host_processes_with(marker) == []
    assert sandbox_uid_processes(workspace) == []


async def test_timeout_kills_children_too(workspace: Path) -> None:
    marker = f"sandbox-child-{os.getpid()}-{time.monotonic_ns()}"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "while True: pass", {marker!r}])
time.sleep(300)
"""
    result = await run(code, workspace, timeout_s=1.5)
    assert result.timed_out
    time.sleep(0.2)
    assert host_processes_with(marker) == []


async def test_huge_output_is_capped(workspace: Path) -> None:
    result = await run("import sys\nsys.stdout.write('x' * 20_000_000)", workspace, max_output_bytes=1000)
    assert result.exit_code == 0
    assert result.stdout.startswith("x" * 1000) and len(result.stdout) < 1100
    assert "output cut" in result.stdout


async def test_huge_file_is_refused(workspace: Path) -> None:
    code = "open('big', 'wb').write(b'x' * (3 * 2**20))"
    result = await run(code, workspace, max_file_mb=1)
    assert "File too large" in result.stderr
    assert (workspace / "big").stat().st_size <= 2**20


async def test_cancelling_the_caller_kills_the_tree(workspace: Path) -> None:
    marker = f"sandbox-cancelled-{os.getpid()}-{time.monotonic_ns()}"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", {marker!r}])
time.sleep(300)
"""
    with anyio.move_on_after(1.5):
        await run(code, workspace, timeout_s=60)
    assert host_processes_with(marker) == []


async def test_no_privileges_to_regain(workspace: Path) -> None:
    code = """
import os
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(os.getuid() != 0, status["CapEff"].strip(), status["NoNewPrivs"].strip())
for attempt in (lambda: os.setuid(0), lambda: os.setgroups([0]), lambda: os.chroot("/tmp")):
    try:
        attempt()
        print("ALLOWED")
    except OSError:
        print("denied")
"""
    result = await run(code, workspace)
    assert result.stdout.splitlines() == ["True 0000000000000000 1", "denied", "denied", "denied"]


async def test_no_abstract_unix_socket_of_the_host(workspace: Path) -> None:
    name = f"\0swarm-sandbox-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen()
        code = f"""
import socket
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect({name!r})
    print("CONNECTED")
except OSError as error:
    print("refused")
"""
        result = await run(code, workspace)
    assert result.stdout == "refused\n"


async def test_private_tmp_is_small(workspace: Path) -> None:
    code = "open('/tmp/fill', 'wb').write(b'x' * (64 * 2**20))"
    result = await run(code, workspace, tmp_mb=4, max_file_mb=128)
    assert "No space left on device" in result.stderr


async def test_concurrent_runs_share_the_workspace(workspace: Path) -> None:
    results: list[ExecResult] = []

    async def one(i: int) -> None:
        results.append(await run(f"open('out{i}', 'w').write('{i}'); print({i})", workspace))

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    assert sorted(r.stdout for r in results) == ["0\n", "1\n", "2\n", "3\n"]
    assert sorted(p.name for p in workspace.iterdir()) == ["out0", "out1", "out2", "out3"]
