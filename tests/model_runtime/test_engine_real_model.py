"""The engine on the real DeepSeek-V3 model of an init-tiny checkpoint, against
transformers' greedy decoding one prompt at a time (float32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.init_tiny import init_tiny
from model_runtime.tokenizer import KimiTokenizer
from tests.model_runtime.oracle import reference_model

MAX_TOKENS = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny(tmp_path_factory.mktemp("tiny"))


def test_init_tiny_vocab_matches_the_config(checkpoint: Path) -> None:
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    tokenizer = KimiTokenizer.from_dir(checkpoint)
    assert tokenizer.vocab_size == config["vocab_size"]
    assert tokenizer.eos_token_id == config["eos_token_id"]


def test_batched_greedy_equals_transformers_one_prompt_at_a_time(checkpoint: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 700, (n,), generator=gen).tolist() for n in (2, 11, 5, 23)]
    hf = reference_model(checkpoint)
    expected = []
    with torch.no_grad():
        for prompt in prompts:
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
            expected.append(out[0, len(prompt) :].tolist())
    config = EngineConfig(block_size=4, num_kv_blocks=128)
    with LLM(checkpoint, dtype=torch.float32, config=config) as llm:
        outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.token_ids for o in outputs] == expected


def test_int4_checkpoint_generates_text(tmp_path: Path) -> None:
    init_tiny(tmp_path, int4=True)
    with LLM(tmp_path, dtype=torch.float32, config=EngineConfig(num_kv_blocks=64)) as llm:
        out = llm.generate(["Hello world"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert len(out.token_ids) == 4 and isinstance(out.text, str)


def test_greedy_is_the_same_alone_and_batched_with_chunked_prefill(checkpoint: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 700, (n,), generator=gen).tolist() for n in (19, 3, 40)]
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    with LLM(checkpoint, dtype=torch.float32, config=EngineConfig(block_size=4, num_kv_blocks=128)) as llm:
        alone = [llm.generate([p], params)[0].token_ids for p in prompts]
    chunked = EngineConfig(block_size=4, num_kv_blocks=128, max_num_batched_tokens=8, enable_prefix_caching=False)
    with LLM(checkpoint, dtype=torch.float32, config=chunked) as llm:
        batched = [o.token_ids for o in llm.generate(prompts, params)]
    assert batched == alone


def test_speculative_decoding_keeps_transformers_greedy_output(checkpoint: Path) -> None:
    """Drafts checked as extra decode rows (the CPU C kernels among them) change nothing."""
    gen = torch.Generator().manual_seed(2)
    pattern = torch.randint(0, 700, (5,), generator=gen).tolist()
    prompts = [pattern * 4, torch.randint(0, 700, (9,), generator=gen).tolist()]
    hf = reference_model(checkpoint)
    with torch.no_grad():
        expected = [hf.generate(torch.tensor([p]), max_new_tokens=80, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(p) :].tolist() for p in prompts]
    config = EngineConfig(block_size=4, num_kv_blocks=128, num_speculative_tokens=4)
    with LLM(checkpoint, dtype=torch.float32, config=config) as llm:
        outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=80, ignore_eos=True))
        assert llm.stats.num_accepted_draft_tokens > 0  # its outputs come to repeat themselves
    assert [o.token_ids for o in outputs] == expected
