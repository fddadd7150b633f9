"""Running a test file's Triton kernel tests in Triton's CPU interpreter.

Triton picks interpreted or compiled mode when it is first imported, so the interpreted
tests run in a child pytest with `TRITON_INTERPRET=1`: a file marks them `@interpreted`
and has one test call `run_interpreted(__file__)`, which the child itself skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IS_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not IS_INTERPRETED, reason="run by the file's test_kernel_under_the_interpreter")
not_interpreted = pytest.mark.skipif(IS_INTERPRETED, reason="this is the interpreted run")


def run_interpreted(test_file: str) -> None:
    """Runs `test_file`'s `interpreted` tests in a child pytest under the interpreter; all must pass."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k", "interpreted"],
        cwd=root, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
