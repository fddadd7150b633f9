"""The OpenAI-compatible HTTP server around an `LLM`: `/v1/chat/completions`,
`/v1/completions`, `/v1/models`, `/health`, `/stats` (engine counters, prefix-cache hit
rate), with an optional bearer token.

Every request streams from the engine's shared loop, so concurrent clients are
batched together. Tool calls are parsed from Kimi's token format; `tool_choice`
"required" or a named function is enforced by starting the assistant's turn with the
tool-call section (and the name) already written. Not hardened for the open internet:
no rate limits, one API key.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from model_runtime.chat_format import render_chat
from model_runtime.engine.errors import EngineClosedError, InvalidRequestError
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.outputs import RequestOutput
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.openai_schemas import ChatCompletionRequest, CompletionRequest, _Sampling, error_body
from model_runtime.tool_parser import ARGUMENT_BEGIN, CALL_BEGIN, SECTION_BEGIN, StreamingToolParser

DEFAULT_CHAT_MAX_TOKENS = 1024


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code


def create_app(llm: LLM, *, model_name: str, api_key: str | None = None) -> Any:
    app = FastAPI(title="moe-swarm runtime", version="0.1")

    async def check_key(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise _HTTPError(401, "missing or wrong API key", "authentication_error", "invalid_api_key")

    @app.exception_handler(_HTTPError)
    async def _http_error(_: Request, exc: _HTTPError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, type=exc.type, code=exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param), status_code=422)

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.exception_handler(EngineClosedError)
    async def _closed(_: Request, exc: EngineClosedError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), type="server_error"), status_code=503)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats", dependencies=[Depends(check_key)])
    async def stats() -> dict[str, Any]:
        """Engine counters since start, the prefix cache's hit rate among them."""
        counters = llm.stats
        return {**dataclasses.asdict(counters), "prefix_cache_hit_rate": counters.prefix_cache_hit_rate}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "moe-swarm"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat(body: ChatCompletionRequest) -> Any:
        prompt, forced = _chat_prompt(llm, body)
        params = _params(body, body.max_completion_tokens or body.max_tokens or DEFAULT_CHAT_MAX_TOKENS)
        prompt_ids = llm.encode_prompt(prompt)
        stream = llm.stream(prompt_ids, params)
        if body.stream:
            first = await anext(stream)  # errors before the first byte become HTTP errors
            return StreamingResponse(_chat_chunks(first, stream, forced, model_name, body), media_type="text/event-stream")
        final = await _last(stream)
        parser = StreamingToolParser()
        parser.feed(forced + final.text)
        _, parsed = parser.finish()
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content or (None if parsed.tool_calls else "")}
        if parsed.tool_calls:
            message["tool_calls"] = [_tool_call_json(c) for c in parsed.tool_calls]
        if parsed.reasoning is not None:
            message["reasoning_content"] = parsed.reasoning
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(final, bool(parsed.tool_calls)), "logprobs": None}],
            "usage": _usage(final),
        }

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(body: CompletionRequest) -> Any:
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise _HTTPError(400, "this server takes one prompt per request")
            prompt = prompt[0]
        stream = llm.stream(llm.encode_prompt(prompt), _params(body, body.max_tokens or 16))  # type: ignore[arg-type]
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            first = await anext(stream)

            async def chunks() -> AsyncIterator[str]:
                async for out in _prepend(first, stream):
                    choice = {"index": 0, "text": out.delta_text, "finish_reason": out.finish_reason if out.finished else None, "logprobs": None}
                    yield _sse({"id": completion_id, "object": "text_completion", "created": created, "model": model_name, "choices": [choice]})
                yield "data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        final = await _last(stream)
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "text": final.text, "finish_reason": final.finish_reason, "logprobs": None}],
            "usage": _usage(final),
        }

    return app


def _chat_prompt(llm: LLM, body: ChatCompletionRequest) -> tuple[str, str]:
    """The prompt text, and the part of the assistant's turn we wrote for the model."""
    messages = [_message_dict(m) for m in body.messages]
    choice = body.tool_choice
    tools = None if choice == "none" else body.tools
    if choice not in (None, "none", "auto", "required") and not (isinstance(choice, dict) and choice.get("function", {}).get("name")):
        raise _HTTPError(400, "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")
    if choice not in (None, "none", "auto") and not tools:
        raise _HTTPError(400, "tool_choice needs tools")
    thinking = (body.chat_template_kwargs or {}).get("thinking")
    template = llm.tokenizer.chat_template if llm.tokenizer else None
    try:
        prompt = render_chat(messages, tools, template=template, thinking=thinking)
    except ValueError as exc:  # the template refused the conversation
        raise _HTTPError(400, str(exc)) from exc
    forced = ""
    if choice == "required":
        forced = f"{SECTION_BEGIN}{CALL_BEGIN}functions."
    elif isinstance(choice, dict):
        forced = f"{SECTION_BEGIN}{CALL_BEGIN}functions.{choice['function']['name']}:0{ARGUMENT_BEGIN}"
    return prompt + forced, forced


def _message_dict(message: Any) -> dict[str, Any]:
    data = message.model_dump(exclude_none=True)
    if data["role"] == "developer":
        data["role"] = "system"
    return data


def _params(body: _Sampling, max_tokens: int) -> SamplingParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, max_tokens=max_tokens, stop=tuple(stop), seed=body.seed, ignore_eos=body.ignore_eos)


async def _chat_chunks(first: RequestOutput, stream: AsyncIterator[RequestOutput], forced: str, model_name: str, body: ChatCompletionRequest) -> AsyncIterator[str]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model_name}
    yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    parser = StreamingToolParser()
    parser.feed(forced)
    final = first
    async for out in _prepend(first, stream):
        final = out
        shown = parser.feed(out.delta_text)
        if shown:
            yield _sse({**base, "choices": [{"index": 0, "delta": {"content": shown}, "finish_reason": None}]})
    rest, parsed = parser.finish()
    if rest:
        yield _sse({**base, "choices": [{"index": 0, "delta": {"content": rest}, "finish_reason": None}]})
    if parsed.tool_calls:
        calls = [{"index": i, **_tool_call_json(c)} for i, c in enumerate(parsed.tool_calls)]
        yield _sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]})
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(final, bool(parsed.tool_calls))}]})
    if body.stream_options and body.stream_options.include_usage:
        yield _sse({**base, "choices": [], "usage": _usage(final)})
    yield "data: [DONE]\n\n"


async def _prepend(first: RequestOutput, rest: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    yield first
    if not first.finished:
        async for out in rest:
            yield out


async def _last(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    final = None
    async for out in stream:
        final = out
    assert final is not None and final.finished
    return final


def _tool_call_json(call: Any) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _finish(out: RequestOutput, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    return "length" if out.finish_reason == "length" else "stop"


def _usage(out: RequestOutput) -> dict[str, int]:
    prompt, completion = len(out.prompt_token_ids), len(out.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, *, model_name: str | None = None, dtype: str | None = None, device: str | None = None, tensor_parallel_size: int = 1, speculative_tokens: int = 0) -> None:
    """Loads the checkpoint and serves it until interrupted (what `swarm serve` calls);
    `tensor_parallel_size` > 1 splits the model over that many processes (GPUs);
    `speculative_tokens`: EngineConfig.num_speculative_tokens."""
    import torch
    import uvicorn

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    config = EngineConfig(num_speculative_tokens=speculative_tokens)
    with LLM(model_dir, dtype=torch_dtype, device=device, tensor_parallel_size=tensor_parallel_size, config=config) as llm:
        app = create_app(llm, model_name=model_name or _default_name(model_dir), api_key=api_key)
        uvicorn.run(app, host=host, port=port, log_level="info")


def _default_name(model_dir: str) -> str:
    from pathlib import Path

    return Path(model_dir).resolve().name
