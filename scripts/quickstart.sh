#!/usr/bin/env bash
# The README's main job: set up .venv, then run a swarm end to end.
#
# With no model configured: `swarm demo` (demo/run.py), offline. The shipped demo model
# (demo/checkpoint, a small MoE of our own architecture trained by demo/train.py) runs on
# our runtime in-process and generates every token; a coordinator fans out to one sub-agent
# per entity, which search and read a fixture web site served on loopback with real
# Chromium; then one agent does the same lookups alone, for comparison. Arguments go to
# `swarm demo` (e.g. --entities 16 --seed 7, --tui, --json).
#
# With SWARM_MODEL set (e.g. openai:https://api.moonshot.ai/v1, with SWARM_MODEL_NAME and
# OPENAI_API_KEY): examples/wide_lookup.toml against that model. SWARM_MODEL=scripted:
# examples/wide_lookup.script.json replays a scripted stand-in for a model (a test double).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
export SWARM_HOME=${SWARM_HOME:-$root/.swarm}
if [ -n "${SWARM_MODEL:-}" ]; then
    args=(run examples/wide_lookup.toml --model "$SWARM_MODEL")
    [ -n "${SWARM_MODEL_NAME:-}" ] && args+=(--model-name "$SWARM_MODEL_NAME")
else
    bash scripts/system_deps.sh  # chromium, for the demo's browser
    echo "quickstart: no SWARM_MODEL set, running the offline demo (the shipped demo model on our runtime)" >&2
    args=(demo)
fi
status=0
.venv/bin/swarm "${args[@]}" "$@" || status=$?
echo >&2
.venv/bin/swarm runs list --limit 3
exit "$status"
