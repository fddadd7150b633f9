"""The run summary, the JSON object of `swarm run --json` and `swarm runs show --json`.

Built from the trace database in both cases, so the two print the same object:
`{"run_id", "status", "stop_reason", "final_answer", "agents": [{"id", "name",
"parent_id", "role", "status", "steps", "stop_reason"}], "num_tool_calls",
"critical_steps", "wall_time_s", "usage": {"input_tokens", "output_tokens"}}`.
"""

from __future__ import annotations

from typing import Any

from storage.store import TraceStore


def run_summary(store: TraceStore, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    agents = store.agents(run.id)
    return {
        "run_id": run.id,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "final_answer": run.final_answer,
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "parent_id": a.parent_id,
                "role": a.role,
                "status": a.status,
                "steps": a.steps,
                "stop_reason": a.stop_reason,
            }
            for a in agents
        ],
        "num_tool_calls": run.num_tool_calls,
        "critical_steps": run.critical_steps,
        "wall_time_s": run.wall_time_s,
        "usage": {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens},
    }
