"""A FAKE OpenAI-compatible model server on loopback: a test double, not a model.

It speaks the chat-completions protocol (streaming SSE and plain JSON, tool calls,
usage) over real HTTP, so the `openai` backend, retries and the whole swarm are tested
against the same wire protocol as Moonshot's API or vLLM. What it answers is decided by a
`Brain`: a function from the request body to a `Reply`. `SwarmBrain` plays a well-behaved
orchestrator and sub-agents, with failure injection keyed on words in a task.

    with FakeOpenAIServer(SwarmBrain(num_subagents=3)) as server:
        ... openai:{server.base_url} ...
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)  # str: raw arguments
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    error: str = ""
    call_gap_s: float = 0.0  # streamed: a pause before each tool call after the first, as a model writing them


Brain = Callable[[dict[str, Any]], Reply]


def _tool_names(body: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in body.get("tools") or []}


def _task_of(body: dict[str, Any]) -> str:
    return next((m.get("content") or "" for m in body["messages"] if m["role"] == "user"), "")


def _num_assistant_turns(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "assistant")


class SwarmBrain:
    """Plays the orchestrator (create one sub-agent, assign `num_subagents` tasks in one
    turn, answer with their results) and sub-agents (`subagent_tool_calls` calls of
    `subagent_tool`, one per turn, then an answer naming the task).

    Failure injection, by a word in a sub-agent's task: `FAIL` makes its calls return 400;
    `RATE` gets 429 (with Retry-After) on its first `rate_limit_times` calls; `ERR500` gets
    500 on its first call; `SLOW` waits `slow_delay_s` more per call. `call_gap_s` streams
    the assign turn's calls that far apart, as a model takes time to write each.
    """

    def __init__(
        self,
        *,
        num_subagents: int = 3,
        subagent_tool_calls: int = 0,
        subagent_tool: str = "echo",
        latency_s: float = 0.0,
        tasks: list[str] | None = None,
        rate_limit_times: int = 2,
        retry_after_s: float = 0.05,
        slow_delay_s: float = 1.0,
        call_gap_s: float = 0.0,
    ) -> None:
        self.num_subagents = num_subagents
        self.subagent_tool_calls = subagent_tool_calls
        self.subagent_tool = subagent_tool
        self.latency_s = latency_s
        self.tasks = tasks
        self.rate_limit_times = rate_limit_times
        self.retry_after_s = retry_after_s
        self.slow_delay_s = slow_delay_s
        self.call_gap_s = call_gap_s
        self._lock = threading.Lock()
        self._calls_by_task: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        if "assign_task" in _tool_names(body):
            return self._orchestrator(body)
        return self._subagent(body)

    def _orchestrator(self, body: dict[str, Any]) -> Reply:
        turn = _num_assistant_turns(body)
        if turn == 0:
            return Reply(
                tool_calls=[("create_subagent", {"name": "worker", "system_prompt": "You do one part of the task."})],
                delay_s=self.latency_s,
            )
        if turn == 1:
            tasks = self.tasks or [f"part {i}" for i in range(self.num_subagents)]
            return Reply(tool_calls=[("assign_task", {"agent": "worker", "task": t}) for t in tasks], delay_s=self.latency_s,
                         call_gap_s=self.call_gap_s)  # fmt: skip
        results = [m.get("content") or "" for m in body["messages"] if m["role"] == "tool"][1:]
        return Reply(content="FINAL\n" + "\n".join(results), delay_s=self.latency_s)

    def _subagent(self, body: dict[str, Any]) -> Reply:
        task = _task_of(body)
        with self._lock:
            calls = self._calls_by_task[task] = self._calls_by_task.get(task, 0) + 1
        delay = self.latency_s + (self.slow_delay_s if "SLOW" in task else 0.0)
        if "FAIL" in task:
            return Reply(status=400, error="this task is refused", delay_s=delay)
        if "RATE" in task and calls <= self.rate_limit_times:
            return Reply(status=429, error="slow down", headers={"retry-after": str(self.retry_after_s)}, delay_s=delay)
        if "ERR500" in task and calls == 1:
            return Reply(status=500, error="internal error", delay_s=delay)
        turn = _num_assistant_turns(body)
        if turn < self.subagent_tool_calls:
            return Reply(tool_calls=[(self.subagent_tool, {"text": f"{task} #{turn}"})], delay_s=delay)
        return Reply(content=f"result for {task}", delay_s=delay)


class FakeOpenAIServer:
    """Serves a `Brain` on 127.0.0.1 (a free port) from a background thread."""

    def __init__(self, brain: Brain, *, model_name: str = "fake-kimi", api_key: str | None = None) -> None:
        self.brain = brain
        self.model_name = model_name
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.client_ports: list[int] = []  # one per request: fewer distinct ports = reused connections
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "fake"}]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers_seen.append(dict(request.headers))
        self.client_ports.append(request.client.port if request.client else 0)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)
        reply = self.brain(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            self.in_flight -= 1
        if reply.status != 200:
            return JSONResponse(
                {"error": {"message": reply.error, "type": "fake_error", "code": reply.status}},
                status_code=reply.status, headers=reply.headers,
            )
        if body.get("stream"):
            return StreamingResponse(self._sse(body, reply), media_type="text/event-stream")
        return JSONResponse(self._completion(body, reply))

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, int]:
        prompt = sum(len(m.get("content") or "") for m in body["messages"]) // 4 + 1
        completion = len(reply.content or "") // 4 + 1 + 8 * len(reply.tool_calls)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _calls(self, reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": f"functions.{name}:{i}", "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(reply.tool_calls)
        ]

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": self._usage(body, reply),
        }

    async def _sse(self, body: dict[str, Any], reply: Reply):  # type: ignore[no-untyped-def]
        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> str:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.model_name,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if reply.content:
            # two pieces, so that clients really assemble a stream
            half = len(reply.content) // 2
            for piece in (reply.content[:half], reply.content[half:]):
                if piece:
                    yield chunk({"content": piece})
        for i, call in enumerate(self._calls(reply)):
            if i and reply.call_gap_s:
                await asyncio.sleep(reply.call_gap_s)
            arguments = call["function"]["arguments"]
            yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                         "function": {"name": call["function"]["name"], "arguments": arguments[:5]}}]})
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[5:]}}]})
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk({}, usage=self._usage(body, reply))
        yield "data: [DONE]\n\n"

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAIServer:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
