"""`openai:` backend edge cases against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import anyio
import pytest

from swarm.backends.openai_compat import OpenAIChatModel
from swarm.errors import ModelUnavailable
from swarm.messages import Message
from swarm.model import CallContext

CONTEXT = CallContext(agent_id="a1", agent_name="main", role="orchestrator")


REQUEST_HEADS: list[bytes] = []
REQUEST_BODIES: list[bytes] = []


def _serve_once(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A one-connection HTTP server: reads the request (its head goes to REQUEST_HEADS),
    lets `answer` write (or not)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            REQUEST_HEADS.append(head)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            REQUEST_BODIES.append(body)
            answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    thread.join(timeout=5)
    listener.close()


def _complete(base_url: str, *, stream: bool) -> None:
    async def main() -> None:
        model = OpenAIChatModel(base_url, model_name="m", api_key=None, stream=stream, timeout_s=5)
        try:
            await model.complete([Message(role="user", content="hi")], [], CONTEXT)
        finally:
            await model.aclose()

    anyio.run(main)


@pytest.fixture
def broken_stream() -> Iterator[str]:
    def answer(conn: socket.socket) -> None:
        chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        )  # then the connection drops before the terminating chunk

    yield from _serve_once(answer)


def test_a_stream_that_breaks_off_is_a_retryable_unavailable_error(broken_stream: str) -> None:
    with pytest.raises(ModelUnavailable, match="broke off"):
        _complete(broken_stream, stream=True)


def _json_answer(body: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    return answer


@pytest.fixture
def garbage_json() -> Iterator[str]:
    yield from _serve_once(_json_answer(b"<html>proxy error</html>"))


def test_a_non_json_answer_is_an_unavailable_error(garbage_json: str) -> None:
    with pytest.raises(ModelUnavailable, match="invalid JSON"):
        _complete(garbage_json, stream=False)


@pytest.fixture
def plain_tool_call() -> Iterator[str]:
    body = json.dumps({
        "id": "x", "object": "chat.completion", "model": "served-name",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "reasoning_content": "think",
            "tool_calls": [{"type": "function", "function": {"name": "echo", "arguments": "{\"a\": 1}"}}],
        }}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }).encode()  # fmt: skip
    yield from _serve_once(_json_answer(body))


def test_plain_answer_keeps_tool_calls_usage_and_thinking(plain_tool_call: str) -> None:
    async def main() -> None:
        model = OpenAIChatModel(plain_tool_call, model_name="m", api_key=None, stream=False, timeout_s=5)
        try:
            response = await model.complete([Message(role="user", content="hi")], [], CONTEXT)
        finally:
            await model.aclose()
        assert response.model == "served-name"
        assert response.finish_reason == "tool_calls"
        assert response.message.reasoning == "think"
        assert [(c.id, c.name, c.arguments) for c in response.message.tool_calls] == [("functions.echo:0", "echo", '{"a": 1}')]
        assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 3)

    anyio.run(main)


def test_requests_carry_the_key_and_not_the_sdk_telemetry_headers(plain_tool_call: str) -> None:
    async def main() -> None:
        model = OpenAIChatModel(plain_tool_call, model_name="m", api_key="sk-test-key", stream=False, timeout_s=5)
        try:
            await model.complete([Message(role="user", content="héllo ✓")], [], CONTEXT)
        finally:
            await model.aclose()

    REQUEST_HEADS.clear()
    REQUEST_BODIES.clear()
    anyio.run(main)
    head = REQUEST_HEADS[0].decode().lower()
    assert head.startswith("post /v1/chat/completions ")
    assert "authorization: bearer sk-test-key" in head
    assert "content-type: application/json" in head
    assert "x-stainless" not in head
    assert json.loads(REQUEST_BODIES[0].decode("utf-8")) == {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}]}


def test_request_bodies_from_cached_message_json_match_each_history() -> None:
    from swarm.backends.openai_compat import _encode_body, to_openai_message
    from swarm.messages import ToolCall, ToolSpec

    tool = ToolSpec(name="echo", description="Echo.", parameters={"type": "object", "properties": {}})
    call = ToolCall(id="functions.echo:0", name="echo", arguments='{"text": "ü"}')
    history = [Message(role="system", content="s"), Message(role="user", content="u")]
    for turn in range(3):  # the history grows; earlier messages come from the cache
        body = json.loads(_encode_body(history, [tool], {"model": "m", "stream": True}))
        assert body == {"messages": [to_openai_message(m) for m in history], "tools": [tool.to_openai()],
                        "model": "m", "stream": True}
        history += [Message(role="assistant", content=None, tool_calls=(call,)),
                    Message(role="tool", content=f"echo {turn}", tool_call_id=call.id, name="echo")]
    # equal messages that are different objects, and a new tool list, each encode as themselves
    other = [Message(role="user", content="u"), Message(role="user", content="v")]
    assert json.loads(_encode_body(other, [], {"model": "m"}))["messages"] == [{"role": "user", "content": "u"}, {"role": "user", "content": "v"}]


def test_the_json_cache_keeps_to_its_size() -> None:
    from swarm.backends.openai_compat import _JsonCache

    cache = _JsonCache(max_chars=100)
    kept = [object() for _ in range(30)]
    for i, thing in enumerate(kept):
        assert cache.get(id(thing), thing, lambda i=i: f"{i:09d}") == f"{i:09d}"  # 9 characters each
    assert cache._chars <= 100 and len(cache._entries) == 11  # the 11 most recent
    assert cache.get(id(kept[-1]), kept[-1], lambda: "not again") == "000000029"
