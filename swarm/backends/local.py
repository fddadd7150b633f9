"""`local:<checkpoint_dir>`: the embedded engine, in-process, as a `ChatModel`.

One engine per run, shared by every agent, so concurrent sub-agents' calls land in
the same batches (and share the prefix cache for their common system prompt). The
engine loads in a worker thread; its loop runs in a thread of its own. Messages are
written in Kimi's chat format and tool calls parsed from Kimi's tool-call section, each
handed to `CallContext.on_tool_call` as soon as its end marker is generated.
This is the only module of `swarm` that imports `model_runtime`. Runs on asyncio
(the engine hands outputs over with `call_soon_threadsafe`), not trio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from model_runtime.chat_format import render_chat
from model_runtime.engine.errors import EngineClosedError, InvalidRequestError
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.errors import RuntimeEngineError
from model_runtime.tool_parser import ParsedCompletion, StreamingToolParser
from swarm.errors import ModelError, ModelRequestError, ModelSpecError, ModelUnavailable
from swarm.messages import Message, ToolCall, ToolSpec, Usage
from swarm.model import CallContext, ModelResponse, with_early_calls

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 2048


class LocalChatModel:
    """A `ChatModel` over an in-process `LLM`; build it with `open_local_model`."""

    def __init__(self, llm: LLM, *, model_name: str, temperature: float, max_tokens: int | None, top_p: float = 1.0) -> None:
        self.llm = llm
        self._name = model_name
        self.temperature = temperature
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        self.top_p = top_p

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], context: CallContext) -> ModelResponse:
        start = time.monotonic()
        ttft_s = None
        parser = StreamingToolParser()
        early: list[ToolCall] = []  # handed to context.on_tool_call mid-stream
        final = None
        try:
            prompt = render_chat([to_kimi_dict(m) for m in messages], [t.to_openai() for t in tools] or None, template=self.llm.tokenizer.chat_template if self.llm.tokenizer else None)
            params = SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
            async for out in self.llm.stream(prompt, params):
                if ttft_s is None and out.delta_token_ids:
                    ttft_s = time.monotonic() - start
                shown = parser.feed(out.delta_text)
                if shown and context.on_text is not None:
                    context.on_text(shown)
                if context.on_tool_call is not None:
                    for call in parser.complete_calls():
                        early.append(ToolCall(id=call.id, name=call.name, arguments=call.arguments))
                        context.on_tool_call(early[-1])
                final = out
        except (InvalidRequestError, ValueError) as exc:
            raise ModelRequestError(f"local model rejected the request: {exc}") from exc
        except EngineClosedError as exc:
            raise ModelUnavailable(f"local engine is not running: {exc}") from exc
        except RuntimeEngineError as exc:
            raise ModelError(f"local engine failed: {exc}") from exc
        rest, parsed = parser.finish()
        if rest and context.on_text is not None:
            context.on_text(rest)
        assert final is not None
        if parsed.errors:
            logger.warning("agent %s: malformed tool calls from the model: %s", context.agent_name, "; ".join(parsed.errors))
        message = to_message(parsed)
        if early:
            calls = with_early_calls(early, message.tool_calls)
            if calls != message.tool_calls:
                logger.warning("agent %s: the final parse lost or changed tool calls that had started", context.agent_name)
            message = message.model_copy(update={"tool_calls": calls})
        finish_reason = "tool_calls" if message.tool_calls else ("length" if final.finish_reason == "length" else "stop")
        return ModelResponse(
            message=message,
            usage=Usage(input_tokens=len(final.prompt_token_ids), output_tokens=len(final.token_ids)),
            model=self._name,
            finish_reason=finish_reason,
            latency_s=time.monotonic() - start,
            ttft_s=ttft_s,
        )

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.llm.close)


async def open_local_model(checkpoint_dir: str, *, model_name: str | None = None, temperature: float = 1.0, max_tokens: int | None = None, tensor_parallel_size: int = 1, speculative_tokens: int = 0) -> LocalChatModel:
    """Loads the checkpoint (in a worker thread) into an engine shared by all callers of
    the returned model; raises `ModelSpecError` when the folder cannot be served.
    `tensor_parallel_size` > 1 splits the model over that many processes (GPUs);
    `speculative_tokens`: n-gram drafts a step for greedy requests (EngineConfig.num_speculative_tokens)."""
    return await anyio.to_thread.run_sync(lambda: load_local_model(checkpoint_dir, model_name=model_name, temperature=temperature, max_tokens=max_tokens, tensor_parallel_size=tensor_parallel_size, speculative_tokens=speculative_tokens))


def load_local_model(checkpoint_dir: str, *, model_name: str | None = None, temperature: float = 1.0, max_tokens: int | None = None, tensor_parallel_size: int = 1, cpu_threads: int | None = None, speculative_tokens: int = 0) -> LocalChatModel:
    """`open_local_model` for callers outside an event loop (a CLI before its run); blocks."""
    path = Path(checkpoint_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ModelSpecError(f"local:{checkpoint_dir}: no config.json there (make a test checkpoint with `swarm model init-tiny DIR`)")
    if not (path / "tiktoken.model").is_file():
        raise ModelSpecError(f"local:{checkpoint_dir}: no tiktoken.model there; the chat format needs the tokenizer")
    try:
        llm = _load(path, tensor_parallel_size, EngineConfig(cpu_threads=cpu_threads, num_speculative_tokens=speculative_tokens))
    except (RuntimeEngineError, OSError, ValueError) as exc:
        raise ModelSpecError(f"local:{checkpoint_dir}: cannot load the checkpoint: {exc}") from exc
    return LocalChatModel(llm, model_name=model_name or path.resolve().name, temperature=temperature, max_tokens=max_tokens)


def _load(path: Path, tensor_parallel_size: int, config: EngineConfig) -> LLM:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return LLM(path, dtype=dtype, device=device, tensor_parallel_size=tensor_parallel_size, config=config)


def to_kimi_dict(message: Message) -> dict[str, Any]:
    """A swarm message as the chat format's OpenAI-style dict."""
    data: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls]
    if message.role == "tool":
        data["tool_call_id"] = message.tool_call_id or ""
    return data


def to_message(parsed: ParsedCompletion) -> Message:
    calls = tuple(ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in parsed.tool_calls)
    return Message(role="assistant", content=parsed.content or None, tool_calls=calls, reasoning=parsed.reasoning)
