"""The OpenAI-compatible server on loopback, driven by the official `openai` client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.init_tiny import init_tiny
from model_runtime.server import create_app

API_KEY = "test-key"
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello world"}]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = init_tiny(tmp_path_factory.mktemp("tiny"))
    with LLM(path, dtype=torch.float32, config=EngineConfig(num_kv_blocks=512, max_model_len=2048)) as llm:
        app = create_app(llm, model_name="tiny-kimi", api_key=API_KEY)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)


def test_plain_chat_completion_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny-kimi", messages=HELLO, max_tokens=5, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 5


def test_streaming_equals_non_streaming_greedy(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny-kimi", messages=HELLO, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny-kimi", messages=HELLO, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (whole.choices[0].message.content or "")
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_named_tool_choice_returns_a_kimi_tool_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny-kimi", messages=HELLO, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "search"}},
        max_tokens=6, temperature=0, stop=["<|tool_call_end|>"],
    )
    # A random model's arguments are gibberish; the call itself is forced and parsed.
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].id == "functions.search:0" and calls[0].function.name == "search"
    assert reply.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-kimi", messages=HELLO, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "search"}}, max_tokens=4, temperature=0, stream=True
    )
    calls = [tc for chunk in stream if chunk.choices for tc in (chunk.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "functions.search:0" and calls[0].function.name == "search"


def test_concurrent_requests_all_answer(client: openai.OpenAI) -> None:
    def ask(i: int) -> str:
        messages = [*HELLO[:1], {"role": "user", "content": f"question number {i}"}]
        return client.chat.completions.create(model="tiny-kimi", messages=messages, max_tokens=6, temperature=0, seed=i).choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(ask, range(8)))) == 8


def test_completions_and_models(client: openai.OpenAI) -> None:
    out = client.completions.create(model="tiny-kimi", prompt="Hello", max_tokens=3, temperature=0)
    assert 1 <= out.usage.completion_tokens <= 3 and isinstance(out.choices[0].text, str)
    assert [m.id for m in client.models.list().data] == ["tiny-kimi"]


def test_bad_requests_get_openai_error_bodies(base_url: str, client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="tiny-kimi", messages=[], max_tokens=2)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-kimi", messages=HELLO, tool_choice="required", max_tokens=2)
    assert "tool_choice" in info.value.body["message"]
    response = httpx.post(f"{base_url}/v1/chat/completions", json={"messages": "nope"}, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request_error"


def test_bearer_token_is_required(base_url: str) -> None:
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{base_url}/health").json() == {"status": "ok"}
    stats = httpx.get(f"{base_url}/stats", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert stats["num_requests"] > 0 and 0 <= stats["prefix_cache_hit_rate"] <= 1
