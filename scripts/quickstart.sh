#!/usr/bin/env bash
# The README's main job: set up .venv, then run the example task end to end (coordinator,
# four parallel sub-agents, the trace in SQLite, the JSON summary).
#
# Model: SWARM_MODEL (e.g. openai:https://api.moonshot.ai/v1, with SWARM_MODEL_NAME and
# OPENAI_API_KEY) when set; otherwise the scripted replay in examples/, a test double that
# stands in for a model so the whole pipeline runs offline on a fresh machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
export SWARM_HOME=${SWARM_HOME:-$root/.swarm}
args=(run examples/wide_lookup.toml)
if [ -n "${SWARM_MODEL:-}" ]; then
    args+=(--model "$SWARM_MODEL")
    [ -n "${SWARM_MODEL_NAME:-}" ] && args+=(--model-name "$SWARM_MODEL_NAME")
else
    echo "quickstart: no SWARM_MODEL set, replaying examples/wide_lookup.script.json (a scripted stand-in for a model)" >&2
    args+=(--model scripted:examples/wide_lookup.script.json)
fi
.venv/bin/swarm "${args[@]}" "$@"
echo >&2
.venv/bin/swarm runs list --limit 3
