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
