"""`openai:<base_url>`: any OpenAI-compatible chat endpoint (Moonshot, vLLM, SGLang, ours).

Uses the official `openai` client (async) with its own retries switched off: retrying is
`swarm.backends.retry`'s job, so that every attempt is recorded and rate limits can
steer concurrency. Streams by default (time to first token, live text); keeps the
endpoint's tool-call ids and gives Kimi-style ids (`functions.NAME:IDX`) to calls that
come without one; a streamed call goes to `CallContext.on_tool_call` as soon as the next
one begins. Thinking text (`reasoning_content`, as Moonshot and vLLM send it) is kept
and sent back on later turns, which Kimi's thinking models require during tool use.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import time
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from typing import Any

import httpx2  # the openai client's HTTP layer (openai >= 3)
import openai

from swarm.backends.http1 import Http1Transport
from swarm.errors import ModelRequestError, ModelTimeout, ModelUnavailable, RateLimited
from swarm.messages import Message, ToolCall, ToolSpec, Usage, kimi_tool_call_id
from swarm.model import CallContext, ModelResponse, with_early_calls


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    if headers is None:
        return None
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def to_openai_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.role == "assistant":
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ]
        if message.reasoning:
            out["reasoning_content"] = message.reasoning
    elif message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
        if message.name:
            out["name"] = message.name
    return out


# Errors the transport raises while a response body is read (the client maps the ones
# raised before it returns).
_TRANSPORT_ERRORS = (httpx2.HTTPError, httpx2.StreamError)


def _map_error(error: Exception) -> Exception:
    if isinstance(error, openai.RateLimitError):
        return RateLimited(f"rate limited (429): {error.message}", retry_after_s=parse_retry_after(error.response.headers))
    if isinstance(error, openai.APITimeoutError):
        return ModelTimeout("model call timed out")
    if isinstance(error, openai.APIConnectionError):
        return ModelUnavailable(f"cannot reach the model endpoint: {error.message}")
    if isinstance(error, openai.APIStatusError):
        retry_after = parse_retry_after(error.response.headers)
        if error.status_code >= 500:
            return ModelUnavailable(f"model endpoint error {error.status_code}: {error.message}", retry_after_s=retry_after)
        if error.status_code in (408, 409):
            return ModelUnavailable(f"model endpoint answered {error.status_code}: {error.message}", retry_after_s=retry_after)
        return ModelRequestError(f"model endpoint rejected the request ({error.status_code}): {error.message}")
    if isinstance(error, httpx2.TimeoutException):
        return ModelTimeout(f"model call timed out: {error}")
    if isinstance(error, _TRANSPORT_ERRORS):
        return ModelUnavailable(f"model stream broke off: {error!r}")
    if isinstance(error, openai.APIError):
        return ModelUnavailable(f"model endpoint error: {error.message}")
    return error


class _ToolCallBuffer:
    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.arguments: list[str] = []

    def call(self, position: int) -> ToolCall:
        return ToolCall(id=self.id or kimi_tool_call_id(self.name, position), name=self.name,
                        arguments="".join(self.arguments) or "{}")  # fmt: skip


def _complete_call(buffer: _ToolCallBuffer, position: int) -> ToolCall | None:
    """A streamed call whose successor has begun, if it is whole: a name and JSON arguments."""
    call = buffer.call(position)
    try:
        json.loads(call.arguments)
    except json.JSONDecodeError:
        return None
    return call if call.name else None


def _default_http_client(timeout_s: float) -> httpx2.AsyncClient:
    """The SDK's default client settings (redirects, limits) over our lean HTTP/1.1
    transport (swarm/backends/http1.py): a big swarm's client is CPU-bound, and that
    transport costs a fifth less CPU per call than aiohttp's, which cost a third less than
    httpx2's own. Where the environment names a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY),
    the SDK's own transports, which speak to proxies, as they would without us."""
    if any(scheme != "no" for scheme in urllib.request.getproxies()):
        return openai.DefaultAsyncHttpxClient(timeout=timeout_s)
    return openai.DefaultAsyncHttpxClient(transport=Http1Transport(), timeout=timeout_s)


# The SDK's telemetry headers (X-Stainless-*: its version, OS, runtime...) are left out:
# the endpoint needs none of them, and building and checking 10 more headers per
# request was a measurable share of a big swarm's client CPU.
_OMITTED_HEADERS: dict[str, Any] = {
    name: openai.Omit()
    for name in ("X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
                 "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async")
}
_REQUEST_HEADERS: dict[str, Any] = {"X-Stainless-Retry-Count": openai.Omit(), "X-Stainless-Read-Timeout": openai.Omit()}
# The SDK draws a uuid4 idempotency key for every POST unless given one (and sends it only
# to APIs that declare a header for it, which OpenAI's does not): a counter is unique too.
_request_numbers = itertools.count()


def _request_options() -> dict[str, Any]:
    return {"headers": _REQUEST_HEADERS, "idempotency_key": f"moe-swarm-{os.getpid()}-{next(_request_numbers)}"}


async def _event_lines(response: httpx2.Response) -> AsyncIterator[str]:
    """The lines of a server-sent event stream (UTF-8 by the SSE standard).

    Split from the decoded bytes here: the client's `aiter_lines` runs every chunk through
    its text decoder, which looks the charset up in the headers again for each one, a
    measurable share of a big swarm's client CPU.
    """
    pending = b""
    async for chunk in response.aiter_bytes():
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _JsonCache:
    """The JSON text of objects sent again and again, by identity: an agent's history goes
    out whole with every call (its 30th call re-sends 29 turns), so each message and tool
    list is encoded once. Holds the objects it has seen, so an id is never reused while
    cached; the least recently used go when the texts pass `max_chars` in all (a page
    snapshot can be tens of kilobytes)."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._chars = 0
        self._entries: OrderedDict[Hashable, tuple[Any, str]] = OrderedDict()

    def get(self, key: Hashable, held: Any, encode: Callable[[], str]) -> str:
        """`key` names `held` by identity (ids); `held` is kept alive with its text."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[1]
        text = encode()
        self._entries[key] = (held, text)
        self._chars += len(text)
        while self._chars > self._max_chars and len(self._entries) > 1:
            self._chars -= len(self._entries.popitem(last=False)[1][1])
        return text


_message_json = _JsonCache(8_000_000)  # characters: the histories of hundreds of agents
_tools_json = _JsonCache(1_000_000)


def _encode_body(messages: Sequence[Message], tools: Sequence[ToolSpec], rest: dict[str, Any]) -> bytes:
    """The request's JSON body as bytes, which the client sends as is (its own encoder runs
    every value through a Python fallback hook; ours are plain JSON types)."""
    parts = ["{\"messages\":[", ",".join(_message_json.get(id(m), m, lambda m=m: _json(to_openai_message(m))) for m in messages), "]"]
    if tools:
        held = tuple(tools)
        parts += [",\"tools\":", _tools_json.get(tuple(map(id, held)), held, lambda: _json([t.to_openai() for t in held]))]
    for name, value in rest.items():
        parts += [",", _json(name), ":", _json(value)]
    parts.append("}")
    return "".join(parts).encode()


class OpenAIChatModel:
    """A `ChatModel` over an OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str,
        *,
        model_name: str,
        api_key: str | None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = True,
        timeout_s: float = 600.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Servers without auth (vLLM, SGLang, ours) accept any key; the client needs one.
            api_key=api_key or "not-needed",
            max_retries=0,
            timeout=timeout_s,
            http_client=http_client if http_client is not None else _default_http_client(timeout_s),
            default_headers=_OMITTED_HEADERS,
        )
        # Posted to as an absolute URL: a relative one is re-joined onto the base URL per call.
        self._chat_url = str(self._client.base_url).rstrip("/") + "/chat/completions"
        self._model_name = model_name
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._stream = stream

    @property
    def name(self) -> str:
        return self._model_name

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext
    ) -> ModelResponse:
        # The body is built here and posted through the client's generic `post` (its
        # documented way to reach any route): `chat.completions.create` first walks every
        # argument against its typed params, and on long swarm conversations that walk
        # cost more CPU than the rest of the call. Auth, base URL, timeouts and the
        # mapping of error statuses to `openai` exceptions stay the client's.
        rest: dict[str, Any] = {"model": self._model_name}
        if self._temperature is not None:
            rest["temperature"] = self._temperature
        if self._max_tokens is not None:
            rest["max_tokens"] = self._max_tokens
        if self._stream:
            rest["stream"] = True
            rest["stream_options"] = {"include_usage": True}
        body = _encode_body(messages, tools, rest)
        started = time.perf_counter()
        try:
            if self._stream:
                return await self._complete_streaming(body, context, started)
            return await self._complete_once(body, started)
        except (openai.OpenAIError, *_TRANSPORT_ERRORS) as error:
            raise _map_error(error) from error

    async def _complete_once(self, body: bytes, started: float) -> ModelResponse:
        response = await self._client.post(
            self._chat_url, content=body, cast_to=httpx2.Response, options=_request_options()
        )
        try:
            completion = response.json()
        except ValueError as exc:
            raise ModelUnavailable(f"model endpoint sent invalid JSON: {exc}") from None
        if not isinstance(completion, dict) or not completion.get("choices"):
            raise ModelUnavailable("model endpoint returned no choices")
        choice = completion["choices"][0]
        raw = choice.get("message") or {}
        calls = tuple(
            ToolCall(
                id=c.get("id") or kimi_tool_call_id(c["function"].get("name") or "", i),
                name=c["function"].get("name") or "",
                arguments=c["function"].get("arguments") or "{}",
            )
            for i, c in enumerate(raw.get("tool_calls") or [])
            if isinstance(c.get("function"), dict)
        )
        message = Message(
            role="assistant", content=raw.get("content"), tool_calls=calls, reasoning=raw.get("reasoning_content")
        )
        raw_usage = completion.get("usage") or {}
        usage = Usage(
            input_tokens=raw_usage.get("prompt_tokens") or 0, output_tokens=raw_usage.get("completion_tokens") or 0
        )
        return ModelResponse(
            message=message, usage=usage, model=completion.get("model") or self._model_name,
            finish_reason=choice.get("finish_reason"), latency_s=time.perf_counter() - started,
        )

    async def _complete_streaming(
        self, body: bytes, context: CallContext, started: float
    ) -> ModelResponse:
        # The raw event stream is read here rather than through the client's typed chunks:
        # building a model object per chunk was the client's largest CPU cost per call.
        content: list[str] = []
        reasoning: list[str] = []
        buffers: dict[int, _ToolCallBuffer] = {}
        early: list[ToolCall] = []  # handed to context.on_tool_call mid-stream
        last_index = -1  # the highest tool-call index streamed so far
        usage = Usage()
        finish_reason: str | None = None
        model = self._model_name
        ttft_s: float | None = None
        response = await self._client.post(
            self._chat_url, content=body, cast_to=httpx2.Response, stream=True, options=_request_options()
        )
        try:
            async for line in _event_lines(response):
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read on to the end rather than break: a body left unread makes the
                    # HTTP client close the connection instead of reusing it.
                    continue
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise ModelUnavailable(f"model stream sent invalid JSON: {exc.msg}") from None
                if error := chunk.get("error"):
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise ModelUnavailable(f"model stream reported an error: {message}")
                model = chunk.get("model") or model
                if raw_usage := chunk.get("usage"):
                    usage = Usage(
                        input_tokens=raw_usage.get("prompt_tokens") or 0,
                        output_tokens=raw_usage.get("completion_tokens") or 0,
                    )
                for choice in chunk.get("choices") or ():
                    finish_reason = choice.get("finish_reason") or finish_reason
                    delta = choice.get("delta") or {}
                    text, parts = delta.get("content"), delta.get("tool_calls")
                    if ttft_s is None and (text or parts):
                        ttft_s = time.perf_counter() - started
                    if text:
                        content.append(text)
                        if context.on_text is not None:
                            context.on_text(text)
                    if thinking := delta.get("reasoning_content"):
                        reasoning.append(thinking)
                    for part in parts or ():
                        index = part.get("index", 0)
                        if index > last_index >= 0 and context.on_tool_call is not None:
                            # Servers stream calls in order: a new index closes the last one.
                            call = _complete_call(buffers[last_index], len(buffers) - 1)
                            if call is not None and len(early) == len(buffers) - 1:
                                early.append(call)
                                context.on_tool_call(call)
                        last_index = max(last_index, index)
                        buffer = buffers.setdefault(index, _ToolCallBuffer())
                        buffer.id = part.get("id") or buffer.id
                        function = part.get("function") or {}
                        buffer.name += function.get("name") or ""
                        buffer.arguments.append(function.get("arguments") or "")
        finally:
            await response.aclose()
        calls = with_early_calls(early, [buffer.call(i) for i, (_, buffer) in enumerate(sorted(buffers.items()))])
        message = Message(
            role="assistant",
            content="".join(content) or None,
            tool_calls=calls,
            reasoning="".join(reasoning) or None,
        )
        return ModelResponse(
            message=message, usage=usage, model=model, finish_reason=finish_reason,
            latency_s=time.perf_counter() - started, ttft_s=ttft_s,
        )
