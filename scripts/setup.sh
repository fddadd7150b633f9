#!/usr/bin/env bash
# Creates .venv in the checkout and installs moe-swarm into it, once; later calls are quick.
# Where there is no CUDA, the CPU build of torch goes in first so that the `torch>=2.5`
# requirement does not pull a multi-GB CUDA build. TORCH_SPEC overrides the pin.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
pip=(.venv/bin/python -m pip install -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "setup: CUDA found, installing torch" >&2
        "${pip[@]}" "${TORCH_SPEC:-torch>=2.5}"
    else
        echo "setup: no CUDA, installing the CPU build of torch" >&2
        "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
    fi
fi
# SWARM_EXTRAS: the optional dependency groups (scripts/test.sh adds gpu, for triton).
# The stamp lists the groups installed, one per line; a run asking for no new group and
# finding pyproject.toml unchanged installs nothing.
extras=${SWARM_EXTRAS:-dev}
stamp=.venv/.moe-swarm-installed
missing=0
[ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] || missing=1
for group in ${extras//,/ }; do
    [ -f "$stamp" ] && grep -qxF "$group" "$stamp" || missing=1
done
if [ "$missing" = 1 ]; then
    [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && extras="$extras,$(paste -sd, "$stamp")"
    echo "setup: installing moe-swarm and its dependencies ($extras)" >&2
    "${pip[@]}" -e ".[$extras]"
    tr , '\n' <<<"$extras" | sort -u >"$stamp"
fi
