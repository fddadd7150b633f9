#!/usr/bin/env bash
# The test command of the README: sets up .venv if needed, then runs the default suite
# (slow and GPU-only tests are left out; run them with `scripts/test.sh -m slow`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWARM_EXTRAS=${SWARM_EXTRAS:-dev,gpu} "$root/scripts/setup.sh"  # gpu: triton, whose CPU interpreter the kernel tests use
cd "$root"
exec .venv/bin/python -m pytest -q "$@"
