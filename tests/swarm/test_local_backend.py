"""The `local:` backend against an init-tiny checkpoint: plumbing, not model quality."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from model_runtime.init_tiny import init_tiny
from model_runtime.tool_parser import parse_completion
from swarm.backends.local import LocalChatModel, load_local_model, open_local_model, to_kimi_dict, to_message
from swarm.errors import ModelSpecError
from swarm.messages import Message, ToolCall, ToolSpec
from swarm.model import CallContext

pytestmark = pytest.mark.anyio
MESSAGES = [Message(role="system", content="You are a sub-agent."), Message(role="user", content="Hello world")]
TOOLS = [ToolSpec(name="search", description="Search the web")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
async def model(checkpoint: Path) -> AsyncIterator[LocalChatModel]:
    local = await open_local_model(str(checkpoint), model_name="tiny", temperature=0.0, max_tokens=6)
    yield local
    await local.aclose()


async def test_text_comes_back_streamed_with_usage(model: LocalChatModel) -> None:
    deltas: list[str] = []
    context = CallContext(agent_id="a1", agent_name="worker", role="subagent", on_text=deltas.append)
    response = await model.complete(MESSAGES, TOOLS, context)
    assert response.model == "tiny" and response.message.role == "assistant"
    assert "".join(deltas) == (response.message.content or "")
    assert response.usage.input_tokens > 10 and 1 <= response.usage.output_tokens <= 6
    assert response.finish_reason in ("stop", "length") and response.ttft_s is not None


async def test_concurrent_agents_share_batches(model: LocalChatModel) -> None:
    context = CallContext(agent_id="a", agent_name="worker", role="subagent")
    async with anyio.create_task_group() as group:
        for i in range(4):
            group.start_soon(model.complete, [*MESSAGES, Message(role="user", content=f"task {i}")], TOOLS, context)
    stats = model.llm.stats
    assert stats.num_requests == 4
    assert stats.num_steps < 4 * 6  # one after another would take at least 4 x 6 steps
    assert stats.prefix_cache_hit_tokens > 0  # the shared system prompt and tools


async def test_bad_checkpoint_dir_is_a_model_spec_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="config.json"):
        await open_local_model(str(tmp_path), model_name=None, temperature=1.0, max_tokens=None)


async def test_unloadable_checkpoint_is_a_model_spec_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "tiktoken.model").write_text("")
    with pytest.raises(ModelSpecError, match="cannot load"):
        await open_local_model(str(tmp_path), model_name=None, temperature=1.0, max_tokens=None)


def test_sync_loader_outside_an_event_loop(checkpoint: Path) -> None:
    model = load_local_model(str(checkpoint), model_name=None, temperature=0.0, max_tokens=3)
    try:
        assert model.name == checkpoint.name
        response = anyio.run(model.complete, MESSAGES, [], CallContext(agent_id="a", agent_name="w", role="orchestrator"))
        assert response.usage.output_tokens <= 3
    finally:
        model.llm.close()


def test_kimi_tool_calls_become_swarm_tool_calls() -> None:
    text = "Looking.<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>{\"q\": \"x\"}<|tool_call_end|><|tool_calls_section_end|>"
    message = to_message(parse_completion(text))
    assert message.content == "Looking." and message.tool_calls == (ToolCall(id="functions.search:0", name="search", arguments='{"q": "x"}'),)
    back = to_kimi_dict(message)
    assert back["tool_calls"][0]["function"]["name"] == "search"
    tool_turn = to_kimi_dict(Message(role="tool", content="ok", tool_call_id="functions.search:0", name="search"))
    assert tool_turn["tool_call_id"] == "functions.search:0"


def test_task_file_tensor_parallel_size_splits_the_local_engine(checkpoint: Path) -> None:
    """`[model].tensor_parallel_size = 2`: two processes, the same greedy answer as one."""
    from swarm.launch import build_model
    from swarm.model_spec import parse_model_spec
    from swarm.task_file import parse_task

    context = CallContext(agent_id="a", agent_name="w", role="orchestrator")
    answers = []
    for size in (1, 2):
        task = parse_task({"task": {"prompt": "hi"}, "model": {"temperature": 0.0, "max_tokens": 5, "tensor_parallel_size": size}})
        model, _ = build_model(parse_model_spec(f"local:{checkpoint}"), task, None)
        try:
            runner = model.llm.engine.runner
            assert len(getattr(getattr(runner, "group", None), "worker_pids", [])) == size - 1
            answers.append(anyio.run(model.complete, MESSAGES, TOOLS, context).message)
        finally:
            model.llm.close()
    assert answers[0] == answers[1]


def test_tensor_parallel_size_is_for_local_models_only() -> None:
    from swarm.errors import TaskFileError
    from swarm.launch import build_model
    from swarm.model_spec import parse_model_spec
    from swarm.task_file import parse_task

    task = parse_task({"task": {"prompt": "hi"}, "model": {"tensor_parallel_size": 2}})
    with pytest.raises(TaskFileError, match="local: models only"):
        build_model(parse_model_spec("openai:http://127.0.0.1:1/v1"), task, "m")


def test_task_file_speculative_tokens_reach_the_local_engine(checkpoint: Path) -> None:
    """`[model].speculative_tokens`: the engine drafts for greedy calls; its bound is the engine's."""
    from model_runtime.engine.speculative import MAX_SPECULATIVE_TOKENS
    from swarm.errors import TaskFileError
    from swarm.launch import build_model
    from swarm.model_spec import parse_model_spec
    from swarm.task_file import parse_task

    task = parse_task({"task": {"prompt": "hi"}, "model": {"temperature": 0.0, "max_tokens": 5, "speculative_tokens": 3}})
    model, _ = build_model(parse_model_spec(f"local:{checkpoint}"), task, None)
    try:
        assert model.llm.engine.scheduler.proposer.num_tokens == 3
    finally:
        model.llm.close()
    parse_task({"task": {"prompt": "hi"}, "model": {"speculative_tokens": MAX_SPECULATIVE_TOKENS}})
    with pytest.raises(TaskFileError, match="speculative_tokens"):
        parse_task({"task": {"prompt": "hi"}, "model": {"speculative_tokens": MAX_SPECULATIVE_TOKENS + 1}})
    with pytest.raises(TaskFileError, match="local: models only"):
        build_model(parse_model_spec("openai:http://127.0.0.1:1/v1"), task, "m")
