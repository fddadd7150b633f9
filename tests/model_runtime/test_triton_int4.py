"""The grouped W4A16 Triton kernel against a plain dequantize-then-matmul reference.

On CPU the kernel runs in Triton's interpreter. Triton decides between interpreting and
compiling as it is imported, so the interpreted tests run in a subprocess started with
`TRITON_INTERPRET=1` (`test_kernel_under_the_interpreter`; or run this file with that
variable set); the `gpu` tests run the compiled kernel on CUDA and the whole MoE layer
through it. Everything is skipped without triton.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from model_runtime.config import ModelConfig  # noqa: E402
from model_runtime.layers.moe import MoE  # noqa: E402
from model_runtime.quant import triton_int4  # noqa: E402
from model_runtime.quant.int4 import Int4Experts, pack_int4  # noqa: E402
from model_runtime.testing import tiny_config  # noqa: E402
from tests.model_runtime.oracle import reference_unpack_int4  # noqa: E402
from tests.model_runtime.triton_interpreter import interpreted, not_interpreted, run_interpreted  # noqa: E402


@not_interpreted
def test_kernel_under_the_interpreter():
    run_interpreted(__file__)


def random_experts(num_experts: int, dim: int, hidden: int, *, seed: int = 0) -> Int4Experts:
    gen = torch.Generator().manual_seed(seed)
    experts = Int4Experts(num_experts, dim, hidden)
    for e in range(num_experts):
        experts.w13_packed[e], experts.w13_scale[e] = pack_int4(torch.randn(2 * hidden, dim, generator=gen) * dim**-0.5)
        experts.w2_packed[e], experts.w2_scale[e] = pack_int4(torch.randn(dim, hidden, generator=gen) * hidden**-0.5)
    return experts


def reference_moe(experts: Int4Experts, x: torch.Tensor, topk_idx: torch.Tensor, topk_w: torch.Tensor) -> torch.Tensor:
    """Token by token, in float32, from independently dequantized weights."""
    out = torch.zeros(x.shape, dtype=torch.float32)
    w13s = [reference_unpack_int4(experts.w13_packed[e], experts.w13_scale[e]) for e in range(experts.num_experts)]  # [2I, D] each
    w2s = [reference_unpack_int4(experts.w2_packed[e], experts.w2_scale[e]) for e in range(experts.num_experts)]  # [D, I] each
    for t in range(x.shape[0]):
        for e, w in zip(topk_idx[t].tolist(), topk_w[t].tolist()):
            w13, w2 = w13s[e], w2s[e]
            gate, up = (w13 @ x[t].float()).chunk(2)
            out[t] += w * (w2 @ (F.silu(gate) * up))
    return out


def routing(num_tokens: int, num_experts: int, top_k: int, *, seed: int, skew: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_tokens, num_experts, generator=gen)
    if skew:  # expert 0 busy (several row blocks), the last two never chosen
        scores[:, 0] += 1.0
        scores[:, -2:] -= 2.0
    return scores.topk(top_k, dim=-1).indices, torch.rand(num_tokens, top_k, generator=gen)


def test_align_pads_each_experts_pairs_to_whole_blocks():
    topk_idx = torch.tensor([[2, 0], [2, 1], [0, 2]])  # pairs 0..5 -> experts 2,0,2,1,0,2
    pair_of_row, block_expert = triton_int4.align(topk_idx, num_experts=4, block_m=2)
    assert block_expert.tolist() == [0, 1, 2, 2, -1, -1, -1]  # ceil(6/2) + min(4, 6) blocks
    assert pair_of_row.tolist() == [1, 4, 3, 6, 0, 2, 5, 6] + [6] * 6  # 6 = padding


@interpreted
@pytest.mark.parametrize(("num_tokens", "skew"), [(1, False), (3, False), (24, True)])
def test_interpreted_kernel_matches_reference_float32(num_tokens: int, skew: bool):
    experts = random_experts(8, 64, 32)
    x = torch.randn(num_tokens, 64, generator=torch.Generator().manual_seed(1))
    topk_idx, topk_w = routing(num_tokens, 8, 2, seed=2, skew=skew)
    out = triton_int4.int4_moe(x, topk_idx, topk_w, experts.w13_packed, experts.w13_scale, experts.w2_packed, experts.w2_scale)
    torch.testing.assert_close(out, reference_moe(experts, x, topk_idx, topk_w), rtol=1e-4, atol=1e-4)


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_interpreted_kernel_matches_reference_half(dtype: torch.dtype):
    experts = random_experts(4, 64, 64, seed=3)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4))
    topk_idx, topk_w = routing(5, 4, 2, seed=5)
    out = triton_int4.int4_moe(x.to(dtype), topk_idx, topk_w, experts.w13_packed, experts.w13_scale, experts.w2_packed, experts.w2_scale)
    assert out.dtype == dtype
    expected = reference_moe(experts, x.to(dtype), topk_idx, topk_w)
    torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2 * expected.abs().max().item())


@interpreted
def test_interpreted_kernel_matches_the_torch_path_of_int4_experts():
    experts = random_experts(8, 64, 32, seed=6)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(7))
    topk_idx, topk_w = routing(6, 8, 3, seed=8)
    out = triton_int4.int4_moe(x, topk_idx, topk_w, experts.w13_packed, experts.w13_scale, experts.w2_packed, experts.w2_scale)
    torch.testing.assert_close(out, experts(x, topk_idx, topk_w), rtol=1e-4, atol=1e-4)  # CPU: the torch path


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("num_tokens", [1, 8, 64, 300])
def test_cuda_kernel_matches_reference(num_tokens: int):
    experts = random_experts(64, 256, 128, seed=9)
    x = torch.randn(num_tokens, 256, generator=torch.Generator().manual_seed(10))
    topk_idx, topk_w = routing(num_tokens, 64, 6, seed=11)
    expected = reference_moe(experts, x.bfloat16(), topk_idx, topk_w)
    on_gpu = experts.cuda()
    out = triton_int4.int4_moe(x.bfloat16().cuda(), topk_idx.cuda(), topk_w.cuda(), on_gpu.w13_packed, on_gpu.w13_scale, on_gpu.w2_packed, on_gpu.w2_scale)
    torch.testing.assert_close(out.float().cpu(), expected, rtol=3e-2, atol=3e-2 * expected.abs().max().item())


@pytest.mark.gpu
@cuda
def test_cuda_moe_layer_with_int4_experts_matches_cpu():
    """The whole MoE block (router, shared experts, routed experts through the kernel)
    on CUDA against the same block on CPU (the torch W4A16 path), float32."""
    config = ModelConfig.from_dict(tiny_config(hidden_size=256, moe_intermediate_size=128, n_routed_experts=64, num_experts_per_tok=6))
    torch.manual_seed(12)
    moe = MoE(config)
    for param in moe.parameters():
        torch.nn.init.normal_(param, std=param.shape[-1] ** -0.5)
    moe.experts = Int4Experts.from_dense(moe.experts)
    x = torch.randn(16, 256)
    expected = moe(x)
    out = moe.cuda()(x.cuda())
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-3, atol=1e-3)
