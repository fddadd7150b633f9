from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.store import TraceStore
from swarm.backends.retry import RetryingModel
from swarm.backends.scripted import ScriptedChatModel, load_script
from swarm.coordinator import Coordinator, RunRequest
from swarm.errors import ModelSpecError
from swarm.recorder import Recorder

pytestmark = pytest.mark.anyio

SCRIPT = {
    "orchestrator": [
        {"tool_calls": [{"name": "create_subagent", "arguments": {"name": "r", "system_prompt": "s"}}]},
        {"tool_calls": [{"name": "assign_task", "arguments": {"agent": "r", "task": t}} for t in ("A", "B")]},
        {"content": "done:\n{results}"},
    ],
    "default_subagent": [{"content": "answer {task}"}],
}


async def test_scripted_replay_drives_a_full_swarm(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SCRIPT))
    store = TraceStore(tmp_path / "t.db")
    with Recorder(store) as recorder:
        coordinator = Coordinator(RunRequest(prompt="p"), RetryingModel(ScriptedChatModel(load_script(path))), [], recorder)
        outcome = await coordinator.run()
    assert outcome.status == "succeeded"
    assert outcome.final_answer == "done:\nanswer A\nanswer B"
    assert outcome.critical_steps == 4


async def test_running_past_the_script_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"orchestrator": [{"tool_calls": [{"name": "nothing", "arguments": {}}]}]}))
    store = TraceStore(tmp_path / "t.db")
    with Recorder(store) as recorder:
        outcome = await Coordinator(RunRequest(prompt="p", mode="single"), RetryingModel(ScriptedChatModel(load_script(path))), [], recorder).run()
    assert outcome.status == "failed"
    assert outcome.stop_reason == "script has no turn 2 for orchestrator 'agent' (1 scripted)"


def test_bad_scripts_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no such script file"):
        load_script(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"orchestrator": [{"contents": "x"}]}')
    with pytest.raises(ModelSpecError, match="orchestrator.0.contents"):
        load_script(bad)
