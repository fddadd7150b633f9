"""The C kernels for CPU (model_runtime/cpu_kernels.py) compute what the torch paths they
replace compute, in float32 to rounding; the engine gives the same greedy tokens with
and without them; without a C compiler it keeps its torch paths and says so once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model_runtime import cpu_kernels
from model_runtime.engine.paged_attention import PagedBatch, PagedLatentAttention
from model_runtime.layers.rope import apply_rotary, rotation_tables

needs_kernels = pytest.mark.skipif(cpu_kernels.rms_norm() is None, reason="no C compiler here")
pytestmark = needs_kernels


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("num_heads", "latent", "rope", "block_size"), [(4, 32, 8, 16), (1, 64, 16, 4), (3, 16, 8, 8)])
def test_decode_kernel_equals_the_padded_torch_attention(num_heads: int, latent: int, rope: int, block_size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    dim, num_blocks = latent + rope, 64
    lens = torch.tensor([1, block_size, block_size + 1, 5 * block_size - 3, 2])  # [S]: single tokens, block edges, ragged
    width = int(-(-lens.max() // block_size))
    tables = torch.stack([torch.randperm(num_blocks, generator=gen)[:width] for _ in lens])  # [S, nb]
    rows = torch.randn(num_blocks, block_size, dim, generator=gen)  # [blocks, B, D], the torch layout
    q = torch.randn(len(lens), num_heads, dim, generator=gen)  # [S, H, D]
    positions = torch.arange(width * block_size)
    bias = torch.zeros(len(lens), 1, width * block_size).masked_fill_(positions >= lens[:, None, None], float("-inf"))
    batch = PagedBatch(torch.zeros(0, dtype=torch.long), torch.arange(len(lens)), tables, bias, (), True, lens)
    expected = PagedLatentAttention._decode(q, rows.view(num_blocks, -1), batch, 0.3, latent)  # [S, H, C]
    kernel = cpu_kernels.mla_decode(num_heads, dim, latent, block_size)
    assert kernel is not None
    transposed = rows.transpose(1, 2).contiguous().view(num_blocks, -1)  # [blocks, D * B], each block [D, B]
    close(kernel(q, transposed, tables, lens, 0.3), expected)


def test_large_models_keep_the_torch_attention() -> None:
    assert not cpu_kernels.fits(64, 576, 512, 16)  # Kimi K2 per rank: its accumulators would not fit the stack
    assert not cpu_kernels.fits(4, 40, 32, 12)  # a block is one vector: a power of two
    assert cpu_kernels.fits(4, 40, 32, 16) and cpu_kernels.fits(4, 80, 64, 16)  # init-tiny, the demo model


def test_rms_norm_kernel_equals_f_rms_norm_on_strided_rows() -> None:
    x = torch.randn(7, 40)[:, :32]  # a column slice: rows 40 apart
    weight = torch.randn(32)
    norm = cpu_kernels.rms_norm()
    assert norm is not None
    close(norm(x, weight, 1e-6), F.rms_norm(x, (32,), weight, 1e-6))
    y = torch.randn(2, 3, 16)
    close(norm(y, torch.ones(16), 1e-5), F.rms_norm(y, (16,), None, 1e-5))


def test_argmax_kernel_takes_the_first_of_equal_maxima() -> None:
    argmax = cpu_kernels.argmax()
    assert argmax is not None
    logits = torch.randn(6, 1000)
    logits[1, [3, 700]] = 50.0  # a tie: the first wins, as torch's
    logits[2] = 0.0
    assert torch.equal(argmax(logits), logits.argmax(dim=-1))
    assert argmax(torch.empty(0, 10)).shape == (0,)


@pytest.mark.parametrize("normalize", [True, False])
def test_route_kernel_equals_the_torch_router(normalize: bool) -> None:
    from model_runtime.config import ModelConfig
    from model_runtime.layers.moe import TopkRouter
    from model_runtime.testing import tiny_config

    router = TopkRouter(ModelConfig.from_dict(tiny_config(n_routed_experts=16, num_experts_per_tok=4, norm_topk_prob=normalize)))
    torch.nn.init.normal_(router.weight, std=0.5)
    router.e_score_correction_bias.normal_(std=0.1)
    x = torch.randn(9, router.weight.shape[1])
    expected_idx, expected_w = router(x)
    router.fuse_for_inference()
    assert router.kernel is not None
    idx, weights = router(x)
    assert torch.equal(idx, expected_idx)
    close(weights, expected_w)


def test_rope_kernel_equals_the_complex_rotation_on_strided_heads() -> None:
    q = torch.randn(5, 4, 40)[..., 32:]  # q_pe: the last 8 of each head's 40
    k = torch.randn(5, 40)[:, 32:]  # k_pe
    angles = torch.rand(5, 4) * 6
    rotation, sin = rotation_tables(angles.cos(), angles.sin(), is_interleaved=True)
    assert sin is None and rotation.is_complex()
    rotate = cpu_kernels.rope_pairs()
    assert rotate is not None
    close(rotate(q, rotation), apply_rotary(q, rotation, None, is_interleaved=True))
    close(rotate(k, rotation), apply_rotary(k, rotation, None, is_interleaved=True))


@pytest.mark.parametrize("int4", [False, True])
def test_sparse_experts_kernel_equals_the_torch_moe(tmp_path: Path, int4: bool) -> None:
    from model_runtime import load_model
    from model_runtime.init_tiny import init_tiny

    model = load_model(init_tiny(tmp_path, int4=int4), dtype=torch.float32, device="cpu")
    moe = model.model.layers[1].mlp
    x = torch.randn(24, model.config.hidden_size)
    with torch.inference_mode():
        expected = moe(x)
        moe.fuse_for_inference()
        assert moe.sparse_kernel is not None
        close(moe(x), expected)


def test_engine_gives_the_same_tokens_with_and_without_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_runtime.engine.llm import LLM, EngineConfig
    from model_runtime.engine.sampling_params import SamplingParams
    from model_runtime.init_tiny import init_tiny

    path = init_tiny(tmp_path)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 700, (int(n),), generator=gen).tolist() for n in (3, 40, 17, 90, 5, 33)]
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (20, 9, 30, 12, 25, 16)]
    config = EngineConfig(block_size=16, num_kv_blocks=256, max_num_batched_tokens=64)  # chunked prefills beside decodes
    outputs = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(cpu_kernels.ENV_SWITCH, switch)
        with LLM(path, dtype=torch.float32, config=config) as llm:
            assert (llm.engine.runner.attention.decode_kernel is not None) == (switch == "1")
            outputs[switch] = [o.token_ids for o in llm.generate(prompts, params)]
    assert outputs["1"] == outputs["0"]


def test_without_a_compiler_the_engine_keeps_its_torch_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from model_runtime.engine.llm import LLM, EngineConfig
    from model_runtime.engine.sampling_params import SamplingParams
    from model_runtime.init_tiny import init_tiny

    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing built there yet
    monkeypatch.setattr(cpu_kernels, "_libraries", {})
    monkeypatch.setattr(cpu_kernels, "_decode_kernels", {})
    monkeypatch.setattr(cpu_kernels, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="model_runtime.cpu_kernels"):
        with LLM(init_tiny(tmp_path / "ckpt"), dtype=torch.float32, config=EngineConfig(num_kv_blocks=64)) as llm:
            assert llm.engine.runner.attention.decode_kernel is None
            (out,) = llm.generate([[1, 2, 3, 4]], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert len(out.token_ids) == 5
    warnings = [r.getMessage() for r in caplog.records if "CPU kernels are not available" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-cc" in warnings[0]


def test_a_built_kernel_is_loaded_from_the_cache_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_kernels._build(cpu_kernels.CSRC / "cpu_ops.c", ())
    assert first.parent == tmp_path / "moe-swarm" / "kernels"

    def no_compiling(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(cpu_kernels.subprocess, "run", no_compiling)
    assert cpu_kernels._build(cpu_kernels.CSRC / "cpu_ops.c", ()) == first
    assert list(first.parent.iterdir()) == [first]  # no temporary build left beside it
