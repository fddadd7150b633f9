"""Speculative decoding with n-gram drafts: the proposer, and the engine's output with it
on (the same tokens as without, in fewer steps; limits, stop tokens and stop strings
cut where they would)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.speculative import NgramProposer, num_accepted
from tests.model_runtime.toy_model import ToyConfig, ToyModel, greedy_reference


def test_proposer_continues_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    proposer = NgramProposer(num_tokens=3, max_ngram=3, min_ngram=1)
    tokens = [1, 2, 3, 4, 9, 2, 3, 5, 6, 7, 2, 3]
    assert proposer.propose(0, tokens, limit=10) == [5, 6, 7]  # (2, 3) last seen before 5, 6, 7
    assert proposer.propose(0, tokens + [4], limit=10) == [9, 2, 3]  # the 3-gram (2, 3, 4) matched, not a shorter one
    assert proposer.propose(0, tokens + [4, 9], limit=2) == [2, 3]  # the limit cuts the draft
    assert proposer.propose(1, [5, 6, 7, 8], limit=4) == []  # nothing repeats
    assert proposer.propose(1, [5, 6, 7, 8, 6], limit=4) == [7, 8, 6]  # a unigram match, up to the end


def test_proposer_index_grows_with_the_sequence_as_a_fresh_one_would_see_it() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6, (80,), generator=gen).tolist()
    growing = NgramProposer(num_tokens=4, max_ngram=3, min_ngram=2)
    for end in range(2, len(tokens)):
        fresh = NgramProposer(num_tokens=4, max_ngram=3, min_ngram=2)
        assert growing.propose(7, tokens[:end], limit=4) == fresh.propose(7, tokens[:end], limit=4)
    growing.forget(7)
    assert 7 not in growing._indexes


def test_proposer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="num_tokens"):
        NgramProposer(num_tokens=0)
    with pytest.raises(ValueError, match="min_ngram"):
        NgramProposer(num_tokens=2, max_ngram=2, min_ngram=3)


def test_num_accepted_counts_the_agreeing_prefix() -> None:
    assert num_accepted((5, 6, 7), [5, 6, 9, 1]) == 2
    assert num_accepted((5, 6), [5, 6, 8]) == 2
    assert num_accepted((5,), [4, 1]) == 0
    assert num_accepted((), [3]) == 0


@pytest.fixture(scope="module")
def model() -> ToyModel:
    return ToyModel(ToyConfig()).eval()


def toy_llm(model: ToyModel, num_speculative_tokens: int, **config: object) -> LLM:
    settings: dict[str, object] = {"block_size": 4, "num_kv_blocks": 256, **config}
    return LLM.from_model(model, None, EngineConfig(num_speculative_tokens=num_speculative_tokens, **settings))  # type: ignore[arg-type]


def repetitive_prompts() -> list[list[int]]:
    """Prompts whose greedy continuations on the toy model repeat n-grams (so drafts are
    proposed and some accepted), one of them a pattern that recurs in the prompt itself."""
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 1000, (n,), generator=gen).tolist() for n in (3, 17, 9, 30)]
    return [*prompts, prompts[1][:6] * 4]


def test_greedy_output_is_unchanged_and_takes_fewer_steps(model: ToyModel) -> None:
    prompts = repetitive_prompts()
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    with toy_llm(model, 4) as llm:
        batched = [o.token_ids for o in llm.generate(prompts, params)]
        assert llm.stats.num_accepted_draft_tokens > 0
        assert llm.stats.num_generated_tokens == 40 * len(prompts)
        steps_before = llm.stats.num_steps
        alone = llm.generate([prompts[2]], params)[0].token_ids
        steps_alone = llm.stats.num_steps - steps_before
    assert batched == [greedy_reference(model, p, 40) for p in prompts]
    assert alone == batched[2] and steps_alone < 40  # accepted drafts: more than a token a step


def test_chunked_prefill_preemption_and_a_sampled_neighbour_keep_outputs(model: ToyModel) -> None:
    """Drafts share steps with prompt chunks (a small token budget), with preemption (few
    blocks) and with a seeded sampled request, which is never drafted for."""
    prompts = repetitive_prompts()
    greedy = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    sampled = SamplingParams(temperature=1.0, top_k=50, seed=3, max_tokens=30, ignore_eos=True)
    outputs = {}
    for k in (0, 4):
        with toy_llm(model, k, max_num_batched_tokens=8, num_kv_blocks=40, enable_prefix_caching=True) as llm:
            greedy_out = [o.token_ids for o in llm.generate(prompts, greedy)]
            sampled_out = llm.generate([prompts[0]], sampled)[0].token_ids
            outputs[k] = (greedy_out, sampled_out)
            assert llm.stats.num_preemptions > 0
            if k:
                assert llm.stats.num_accepted_draft_tokens > 0
    assert outputs[4] == outputs[0]


def test_max_tokens_and_stop_tokens_cut_inside_an_accepted_draft(model: ToyModel) -> None:
    prompt = repetitive_prompts()[4]
    reference = greedy_reference(model, prompt, 40)
    with toy_llm(model, 4) as llm:
        for max_tokens in (1, 2, 7, 13, 29):
            out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))[0]
            assert out.token_ids == reference[:max_tokens] and out.finish_reason == "length"
        for i in range(1, 30, 3):
            stop = reference[i]
            out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[stop]))[0]
            assert out.token_ids == reference[: reference.index(stop) + 1] and out.finish_reason == "stop"


def test_stop_strings_cut_text_and_tokens_where_they_would(model: ToyModel, tmp_path: Path) -> None:
    from model_runtime.tiny_tokenizer import write_tiny_tokenizer
    from model_runtime.tokenizer import KimiTokenizer

    write_tiny_tokenizer(tmp_path, 1024)
    tokenizer = KimiTokenizer.from_dir(tmp_path)
    results = {}
    for k in (0, 4):
        with LLM.from_model(model, tokenizer, EngineConfig(block_size=4, num_kv_blocks=256, num_speculative_tokens=k)) as llm:
            full = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))[0]
            cuts = []
            for start in range(2, len(full.text) - 3, max(1, len(full.text) // 8)):
                stop = full.text[start : start + 3]
                out = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=[stop]))[0]
                assert out.finish_reason == "stop" and out.text == full.text[: full.text.find(stop)]
                cuts.append((out.text, out.token_ids))
            results[k] = (full.token_ids, cuts)
            if k:
                assert llm.stats.num_accepted_draft_tokens > 0
    assert results[4] == results[0]


def test_swarm_serve_takes_speculative_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    import model_runtime.server
    from model_runtime.cli import serve_command
    from model_runtime.engine.speculative import MAX_SPECULATIVE_TOKENS

    (tmp_path / "config.json").write_text("{}")  # the command checks the folder; `serve` is replaced
    calls: list[dict] = []
    monkeypatch.setattr(model_runtime.server, "serve", lambda model_dir, **kwargs: calls.append(kwargs))
    app = typer.Typer()
    app.command()(serve_command)
    ok = CliRunner().invoke(app, ["--model", str(tmp_path), "--speculative-tokens", "4"])
    assert ok.exit_code == 0 and calls[0]["speculative_tokens"] == 4
    bad = CliRunner().invoke(app, ["--model", str(tmp_path), "--speculative-tokens", str(MAX_SPECULATIVE_TOKENS + 1)])
    assert bad.exit_code == 2 and "between 0 and" in bad.output
