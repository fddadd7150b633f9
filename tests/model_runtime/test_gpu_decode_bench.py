"""bench/gpu_decode.py keeps running: its `--smoke` size on CPU prints every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_decode_bench_smoke_prints_its_figures():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "bench/gpu_decode.py", "--smoke", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"measured d2d copy: \d+ GB/s", out), out
    for batch in (1, 2):
        assert re.search(rf"batch +{batch}: +[\d.]+ tok/s +[\d.]+ ms/step", out), out
    assert len(re.findall(r"achieved [\d.]+ GB/s = n/a of peak, [\d.]+% of measured copy", out)) == 2, out
    assert "goal: >= 50% of roofline at batch 1" in out, out
