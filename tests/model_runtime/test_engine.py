"""The engine end to end on a toy MLA model: batching, paging, prefix cache, sampling."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from model_runtime.engine.llm import LLM, EngineConfig, LoopMailbox
from model_runtime.engine.sampling_params import SamplingParams
from tests.model_runtime.toy_model import ToyConfig, ToyModel, greedy_reference

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def model() -> ToyModel:
    return ToyModel(ToyConfig()).eval()


def prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in lengths]


def make_llm(model: ToyModel, **config: object) -> LLM:
    return LLM.from_model(model, None, EngineConfig(**{"block_size": 4, "num_kv_blocks": 256, **config}))


def test_batched_greedy_equals_one_at_a_time_dense_decoding(model: ToyModel) -> None:
    batch = prompts([3, 17, 9, 30, 1])
    with make_llm(model) as llm:
        outputs = llm.generate(batch, GREEDY)
    for prompt, out in zip(batch, outputs):
        assert out.token_ids == greedy_reference(model, prompt, 8)


def test_chunked_prefill_preemption_and_prefix_cache_keep_greedy_output(model: ToyModel) -> None:
    shared = prompts([24])[0]
    batch = [shared + p for p in prompts([5, 11, 2, 7], seed=2)]
    expected = [greedy_reference(model, p, 8) for p in batch]
    # A 7-token budget chunks every prompt; 14 blocks of 4 force preemptions.
    with make_llm(model, max_num_batched_tokens=7, num_kv_blocks=14) as llm:
        outputs = llm.generate(batch, GREEDY)
        assert [o.token_ids for o in outputs] == expected
        assert llm.stats.num_preemptions > 0
        assert llm.stats.prefix_cache_hit_tokens > 0


def test_prefix_cache_skips_shared_prefill_and_counts_hits(model: ToyModel) -> None:
    shared = prompts([40])[0]
    with make_llm(model) as llm:
        llm.generate([shared + [1, 2]], GREEDY)
        before = llm.stats.num_prefill_tokens_computed
        out = llm.generate([shared + [3]], GREEDY)[0]
        assert out.num_cached_tokens == 40
        assert llm.stats.num_prefill_tokens_computed - before == 1
        assert 0 < llm.stats.prefix_cache_hit_rate < 1


def test_seeded_sampling_is_reproducible_and_batch_independent(model: ToyModel) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=7, max_tokens=6, ignore_eos=True)
    prompt = prompts([6])[0]
    with make_llm(model) as llm:
        alone = llm.generate([prompt], params)[0].token_ids
        batched = llm.generate([prompt, *prompts([4, 9], seed=3)], params)[0].token_ids
    assert alone == batched


def test_stop_token_ids_and_max_tokens(model: ToyModel) -> None:
    prompt = prompts([5])[0]
    first = greedy_reference(model, prompt, 3)
    with make_llm(model) as llm:
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[first[2]]))[0]
        assert out.token_ids == first and out.finish_reason == "stop"
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=2))[0]
        assert len(out.token_ids) == 2 and out.finish_reason == "length"


def test_a_request_not_streamed_gets_one_output_when_it_finishes(model: ToyModel) -> None:
    prompt = prompts([5])[0]
    with make_llm(model) as llm:
        engine = llm.engine
        streamed = engine.add_request(prompt, GREEDY)
        final_only = engine.add_request(prompt, GREEDY, is_streamed=False)
        outputs: dict[int, list] = {streamed: [], final_only: []}
        while engine.has_work():
            for out in engine.step():
                outputs[out.request_id].append(out)
    assert len(outputs[streamed]) == 8
    [out] = outputs[final_only]
    assert out.finished and out.token_ids == out.delta_token_ids == outputs[streamed][-1].token_ids


def test_async_stream_interleaves_concurrent_requests(model: ToyModel) -> None:
    async def collect(llm: LLM, prompt: list[int]) -> list[int]:
        tokens: list[int] = []
        async for out in llm.stream(prompt, GREEDY):
            tokens.extend(out.delta_token_ids)
        return tokens

    async def main(llm: LLM) -> list[list[int]]:
        return await asyncio.gather(*(collect(llm, p) for p in batch))

    batch = prompts([4, 12, 7])
    with make_llm(model) as llm:
        results = asyncio.run(main(llm))
        assert llm.stats.num_steps < 3 * 9  # shared steps, not one request after another
    assert results == [greedy_reference(model, p, 8) for p in batch]


def test_a_loops_mailbox_wakes_it_once_for_a_batch_and_keeps_the_order() -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args):
            nonlocal wakeups
            wakeups += 1
            return original(*args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        mailbox, received = LoopMailbox(loop), []
        poster = threading.Thread(target=lambda: [mailbox.post(received.append, i) for i in range(50)])
        poster.start()
        poster.join()  # the loop cannot run meanwhile: one batch
        await asyncio.sleep(0)
        mailbox.post(received.append, 50)  # a later one wakes it again
        await asyncio.sleep(0)
        return received, wakeups

    received, wakeups = asyncio.run(main())
    assert received == list(range(51)) and wakeups == 2


def test_a_mailbox_of_a_closed_loop_raises_so_the_engine_aborts_that_request() -> None:
    loop = asyncio.new_event_loop()
    mailbox = LoopMailbox(loop)
    loop.close()
    with pytest.raises(RuntimeError):
        mailbox.post(print, "lost")


def test_string_prompts_text_and_stop_strings(model: ToyModel, tmp_path) -> None:
    from model_runtime.tiny_tokenizer import write_tiny_tokenizer
    from model_runtime.tokenizer import KimiTokenizer

    write_tiny_tokenizer(tmp_path, 1024)
    tokenizer = KimiTokenizer.from_dir(tmp_path)
    llm = LLM.from_model(model, tokenizer, EngineConfig(block_size=4, num_kv_blocks=256))
    with llm:
        full = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
        assert full.text == tokenizer.decode(full.token_ids)
        stop = full.text[len(full.text) // 2 :][:3]
        cut = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop]))[0]
    assert stop and cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]


def test_invalid_requests_are_rejected_with_a_clear_error(model: ToyModel) -> None:
    from model_runtime.engine.errors import InvalidRequestError

    with make_llm(model, max_model_len=32) as llm:
        with pytest.raises(InvalidRequestError, match="at most 31"):
            llm.generate([list(range(40))], GREEDY)
        with pytest.raises(InvalidRequestError, match="vocab|\\[0, 1024\\)"):
            llm.generate([[5000]], GREEDY)
    with pytest.raises(InvalidRequestError, match="temperature"):
        SamplingParams(temperature=-1)


def test_a_failing_model_fails_waiting_callers_and_closes_the_engine(model: ToyModel) -> None:
    from model_runtime.engine.errors import EngineClosedError

    class Broken(ToyModel):
        def forward_tokens(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    broken = Broken(ToyConfig())
    with make_llm(broken) as llm:
        with pytest.raises(EngineClosedError, match="out of memory"):
            llm.generate([[1, 2, 3]], GREEDY)
        with pytest.raises(EngineClosedError):
            llm.generate([[1, 2, 3]], GREEDY)


def test_a_stream_left_early_is_aborted_and_others_finish(model: ToyModel) -> None:
    long = SamplingParams(temperature=0, max_tokens=50, ignore_eos=True)

    async def leave_early(llm: LLM) -> None:
        async for _ in llm.stream([1, 2, 3], long):
            break

    async def main(llm: LLM) -> list[int]:
        await leave_early(llm)
        tokens: list[int] = []
        async for out in llm.stream([4, 5, 6], GREEDY):
            tokens.extend(out.delta_token_ids)
        return tokens

    with make_llm(model) as llm:
        tokens = asyncio.run(main(llm))
        assert llm.stats.num_generated_tokens < 50 + 8
    assert tokens == greedy_reference(model, [4, 5, 6], 8)
