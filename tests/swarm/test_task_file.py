from __future__ import annotations

from pathlib import Path

import pytest

from swarm.errors import TaskFileError
from swarm.task_file import load_task, parse_task

DESIGN_EXAMPLE = '''
[task]
prompt = "..."
mode = "swarm"
[model]
spec = "openai:http://127.0.0.1:8000/v1"
name = "kimi-k2.5"
api_key_env = "MOONSHOT_API_KEY"
temperature = 1.0
[limits]
max_subagents = 100
max_tool_calls = 1500
max_concurrency = 16
orchestrator_max_steps = 100
subagent_max_steps = 100
timeout_s = 3600
[tools]
enabled = ["browser", "python"]
'''


def test_the_design_doc_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(DESIGN_EXAMPLE)
    task = load_task(path)
    assert task.model.api_key_env == "MOONSHOT_API_KEY"
    assert task.tools.enabled == ["browser", "python"]


def test_only_the_prompt_is_required_and_defaults_are_k25s_limits() -> None:
    task = parse_task({"task": {"prompt": "hello"}})
    assert task.task.mode == "swarm"
    assert (task.limits.max_subagents, task.limits.max_tool_calls) == (100, 1500)
    assert task.tools.enabled == []


def test_tool_options_tables_pass_through_to_kits() -> None:
    task = parse_task({"task": {"prompt": "x"}, "tools": {"enabled": ["browser"], "browser": {"allowed_origins": ["http://a"]}}})
    assert task.tools.options() == {"browser": {"allowed_origins": ["http://a"]}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": {"prompt": "  "}}, "f.toml: [task].prompt: must not be empty"),
        ({"task": {"prompt": "x", "mode": "crowd"}}, "f.toml: [task].mode: input should be 'swarm' or 'single'"),
        ({"task": {"prompt": "x"}, "limits": {"max_tool_calls": "many"}}, "f.toml: [limits].max_tool_calls: input should be a valid integer, unable to parse string as an integer"),
        ({"task": {"prompt": "x"}, "tools": {"enabled": ["a", "a"]}}, "f.toml: [tools].enabled: lists a tool more than once"),
        ({"task": {"prompt": "x"}, "model": {"temperature": 3}}, "f.toml: [model].temperature: input should be less than or equal to 2"),
    ],
)
def test_errors_name_the_file_and_field(data: dict, message: str) -> None:
    with pytest.raises(TaskFileError) as info:
        parse_task(data, source="f.toml")
    assert str(info.value) == message
