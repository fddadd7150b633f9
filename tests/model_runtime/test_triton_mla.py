"""The Triton paged MLA decode kernel against the torch path (`PagedLatentAttention._decode`).

On CPU the kernel runs in Triton's interpreter, in a subprocess started with
`TRITON_INTERPRET=1` (`test_kernel_under_the_interpreter`; or run this file with that
variable set), since triton picks interpreting or compiling as it is first imported.
The `gpu` tests run the compiled kernel on CUDA in bf16, and the engine's greedy decode
(CUDA graphs included) with and without it. Everything is skipped without triton.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from model_runtime.engine import paged_attention  # noqa: E402
from model_runtime.engine import triton_mla  # noqa: E402
from model_runtime.engine.paged_attention import PagedBatch, PagedLatentAttention  # noqa: E402
from tests.model_runtime.triton_interpreter import interpreted, not_interpreted, run_interpreted  # noqa: E402


@not_interpreted
def test_kernel_under_the_interpreter():
    run_interpreted(__file__)


def decode_case(lengths: list[int], heads: int, latent: int, rope: int, block_size: int, *, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A cache with shuffled blocks, block tables padded with block 0 (as the runner pads
    them), the 0/-inf bias, and one query per sequence: `(q, blocks, batch)`."""
    gen = torch.Generator().manual_seed(seed)
    nb = -(-max(lengths) // block_size)
    num_blocks = len(lengths) * nb + 2
    cache = torch.randn(num_blocks, block_size, latent + rope, generator=gen)  # [num_blocks, B, C + R]
    order = torch.randperm(num_blocks - 1, generator=gen) + 1  # block 0 belongs to no one here
    tables, used = [], 0
    for n in lengths:
        own = -(-n // block_size)
        tables.append(order[used : used + own].tolist() + [0] * (nb - own))
        used += own
    decode_blocks = torch.tensor(tables)  # [S, nb]
    is_pad = torch.arange(nb * block_size)[None, :] >= torch.tensor(lengths)[:, None]  # [S, L]
    bias = torch.zeros(is_pad.shape).masked_fill_(is_pad, float("-inf"))[:, None, :]  # [S, 1, L]
    q = torch.randn(len(lengths), heads, latent + rope, generator=gen)  # [S, H, C + R]
    batch = PagedBatch(
        slot_mapping=torch.zeros(len(lengths), dtype=torch.long),
        decode_token_indices=torch.arange(len(lengths)),
        decode_blocks=decode_blocks,
        decode_bias=bias.to(dtype),
        prefills=(),
        is_all_decode=True,
    )
    return q.to(dtype), cache.to(dtype).view(num_blocks, -1), batch


# 5: shorter than a block; 39: three blocks, the last partly padding; 20: two blocks and a padded table.
CASES = [
    # (lengths, H, C, R, B, block_n)
    ([5, 39, 20], 4, 16, 8, 16, 32),
    ([5, 39, 20], 4, 64, 16, 16, 16),
    ([3, 17, 9], 20, 32, 8, 4, 16),  # B smaller than a chunk, two head blocks
]


@interpreted
@pytest.mark.parametrize(("lengths", "heads", "latent", "rope", "block_size", "block_n"), CASES)
def test_interpreted_kernel_matches_torch_decode(lengths, heads, latent, rope, block_size, block_n):
    q, blocks, batch = decode_case(lengths, heads, latent, rope, block_size)
    scale = (latent + rope) ** -0.5
    out = triton_mla.paged_mla_decode(q, blocks, batch.decode_blocks, batch.decode_bias, scale, latent, block_n=block_n)
    expected = PagedLatentAttention._decode(q, blocks, batch, scale, latent)  # CPU: the torch path
    assert out.shape == (len(lengths), heads, latent)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@interpreted
def test_interpreted_kernel_handles_a_graph_padding_row():
    """A CUDA graph's padding row: every block the scratch block, only slot 0 unmasked."""
    q, blocks, batch = decode_case([7, 7], 4, 16, 8, 16)
    scratch = blocks.shape[0] - 1
    batch.decode_blocks[1].fill_(scratch)
    batch.decode_bias[1].fill_(float("-inf"))
    batch.decode_bias[1, :, 0] = 0.0
    out = triton_mla.paged_mla_decode(q, blocks, batch.decode_blocks, batch.decode_bias, 0.2, 16)
    torch.testing.assert_close(out, PagedLatentAttention._decode(q, blocks, batch, 0.2, 16), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], blocks[scratch, :16].expand(4, 16))  # attends to that slot alone


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("lengths", "heads", "latent", "rope", "block_size", "block_n"), [*CASES, ([1, 300, 77, 64], 64, 512, 64, 64, 32)])
def test_cuda_kernel_matches_torch_decode_bf16(lengths, heads, latent, rope, block_size, block_n, monkeypatch: pytest.MonkeyPatch):
    q, blocks, batch = decode_case(lengths, heads, latent, rope, block_size, dtype=torch.bfloat16)
    scale = (latent + rope) ** -0.5
    on_gpu = PagedBatch(**{**batch.__dict__, "decode_blocks": batch.decode_blocks.cuda(), "decode_bias": batch.decode_bias.cuda()})
    out = triton_mla.paged_mla_decode(q.cuda(), blocks.cuda(), on_gpu.decode_blocks, on_gpu.decode_bias, scale, latent, block_n=block_n)
    expected = PagedLatentAttention._decode(q.float(), blocks.float(), PagedBatch(**{**batch.__dict__, "decode_bias": batch.decode_bias.float()}), scale, latent)
    torch.testing.assert_close(out.float().cpu(), expected, rtol=2e-2, atol=2e-2)
    monkeypatch.setattr(paged_attention, "triton_module", lambda name: None)
    torch_path = PagedLatentAttention._decode(q.cuda(), blocks.cuda(), on_gpu, scale, latent)  # CUDA, triton off: bmm
    torch.testing.assert_close(out, torch_path, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@cuda
def test_engine_greedy_decode_is_the_same_with_and_without_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from model_runtime.engine.llm import LLM, EngineConfig
    from model_runtime.engine.sampling_params import SamplingParams
    from model_runtime.init_tiny import init_tiny
    from model_runtime.loader import load_model

    model = load_model(init_tiny(tmp_path / "tiny", int4=True), dtype=torch.float32, device="cuda")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 700, (n,), generator=gen).tolist() for n in (3, 17, 9, 30, 1)]
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    calls = []
    counted = triton_mla.paged_mla_decode
    monkeypatch.setattr(triton_mla, "paged_mla_decode", lambda *a, **k: calls.append(1) or counted(*a, **k))
    outputs = {}
    for use_kernel in (True, False):
        if not use_kernel:
            monkeypatch.setattr(paged_attention, "triton_module", lambda name: None)
        config = EngineConfig(block_size=4, num_kv_blocks=64)  # CUDA graphs on
        with LLM.from_model(model, None, config, dtype=torch.float32, device="cuda") as llm:
            outputs[use_kernel] = [o.token_ids for o in llm.generate(prompts, greedy)]
            assert llm.engine.runner.graphs is not None and llm.engine.runner.graphs.graphs
        if use_kernel:
            assert calls  # decode attention went through the kernel (at capture)
    assert outputs[True] == outputs[False]
