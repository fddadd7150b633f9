#!/usr/bin/env bash
# Everything the GPU work needs measured, in one run on a CUDA machine (about 5 minutes
# on an H200): the `gpu`-marked tests (Triton INT4 kernel, MoE layer on CUDA, Triton
# MLA decode kernel and engine, CUDA-graph decode == eager), then bench/gpu_decode.py at full Moonlight size; every figure goes to
# stdout. Extra arguments go to the benchmark (e.g. --peak-gbps 3350 on an unlisted GPU).
# Uses .venv, made by scripts/setup.sh if missing (on a CUDA machine that installs the
# default CUDA build of torch from PyPI, which brings triton: a multi-GB download, so
# create the venv beforehand where the machine is offline); PYTHON_BIN overrides it.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ -z "${PYTHON_BIN:-}" ] && [ ! -x .venv/bin/python ]; then
    scripts/setup.sh || exit 2
fi
py=${PYTHON_BIN:-.venv/bin/python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
"$py" - <<'PY' || exit 2
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device")
print(f"device: {torch.cuda.get_device_name()}")
try:
    import triton
    print(f"triton {triton.__version__}")
except ImportError:
    print("triton: not importable (INT4 experts and CUDA graphs fall back to eager torch)")
PY
status=0
echo "== gpu tests"
timeout 300 "$py" -m pytest -q -rs -m gpu tests/model_runtime || status=1
echo "== decode benchmark (full size)"
timeout 420 "$py" bench/gpu_decode.py "$@" || status=1
echo "== gpu_check: $([ $status = 0 ] && echo ok || echo FAILED)"
exit $status
