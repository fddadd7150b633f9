"""The layers' launch-saving fast paths compute what their plain forms compute (float32)."""

from __future__ import annotations

import pytest
import torch

from model_runtime.layers import moe
from model_runtime.layers.moe import DenseExperts
from model_runtime.layers.norm import RMSNorm
from model_runtime.layers.rope import apply_rotary, rotation_tables


def experts(seed: int = 0) -> DenseExperts:
    torch.manual_seed(seed)
    module = DenseExperts(num_experts=8, dim=16, hidden_dim=8)
    torch.nn.init.normal_(module.w13, std=0.2)
    torch.nn.init.normal_(module.w2, std=0.2)
    return module


def routing(num_tokens: int, num_experts: int = 8, top_k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(num_tokens)])  # [N, K]
    return idx, torch.rand(num_tokens, top_k, generator=gen)  # [N, K], [N, K]


def test_grouped_experts_equal_the_per_expert_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moe, "DENSE_MAX_MACS", 0)  # no dense path: the grouped one
    module = experts()
    x = torch.randn(24, 16)  # [N, D]
    idx, weights = routing(24)
    counts = torch.bincount(idx.flatten(), minlength=8)
    assert module._is_grouped_cheaper(idx.numel(), int(counts.max()), int(counts.count_nonzero()))
    grouped = module(x, idx, weights)
    module.stacked_weights = lambda dtype: None  # type: ignore[method-assign]  # the loop
    torch.testing.assert_close(grouped, module(x, idx, weights), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_tokens", [1, 3, 24, 64])
def test_dense_experts_equal_the_per_expert_loop(num_tokens: int) -> None:
    module = experts()
    x = torch.randn(num_tokens, 16)  # [N, D]
    idx, weights = routing(num_tokens)
    assert module._is_dense_cheaper(num_tokens, module.w13)
    dense = module(x, idx, weights)
    module.stacked_weights = lambda dtype: None  # type: ignore[method-assign]  # the loop
    torch.testing.assert_close(dense, module(x, idx, weights), rtol=1e-5, atol=1e-6)


def test_dense_experts_only_when_every_expert_on_every_token_is_cheap() -> None:
    module = experts()  # 8 experts, 3 * 8 * 16 multiply-adds each per token
    max_tokens = moe.DENSE_MAX_MACS // (8 * 3 * 8 * 16)
    assert module._is_dense_cheaper(max_tokens, module.w13)
    assert not module._is_dense_cheaper(max_tokens + 1, module.w13)


def test_large_batches_use_the_per_expert_loop() -> None:
    module = experts()
    idx, _ = routing(4096)
    counts = torch.bincount(idx.flatten(), minlength=8)
    assert not module._is_grouped_cheaper(idx.numel(), int(counts.max()), int(counts.count_nonzero()))


def test_complex_rotation_equals_the_pairwise_formula() -> None:
    q = torch.randn(5, 3, 24)  # [N, H, P + R]
    q_pe = q[..., 16:]  # [N, H, R] a strided view, as MLA passes it
    angles = torch.rand(5, 4) * 10  # [N, R/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = q_pe[..., 0::2], q_pe[..., 1::2]
    expected = torch.cat([x1 * cos[:, None] - x2 * sin[:, None], x2 * cos[:, None] + x1 * sin[:, None]], dim=-1)
    torch.testing.assert_close(apply_rotary(q_pe, cos, sin, is_interleaved=True), expected, rtol=1e-6, atol=1e-6)


def test_float32_rms_norm_with_the_weight_inside_equals_the_plain_formula() -> None:
    norm = RMSNorm(24, 1e-6)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(5, 40)[:, 8:32]  # a strided view, as MLA's latent split passes it
    expected = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)


def test_a_precomputed_complex_rotation_equals_cos_and_sin() -> None:
    angles = torch.rand(5, 4) * 10  # [N, R/2]
    cos, sin = rotation_tables(angles.cos(), angles.sin(), is_interleaved=True)
    assert cos.is_complex() and sin is None
    q = torch.randn(5, 3, 24)  # [N, H, P + R]
    for x in (q[..., 16:], q[..., 15:23]):  # complex-viewable, and not (odd offset)
        expected = apply_rotary(x.contiguous(), angles.cos(), angles.sin(), is_interleaved=True)
        torch.testing.assert_close(apply_rotary(x, cos, sin, is_interleaved=True), expected, rtol=0, atol=0)
    assert rotation_tables(angles.cos(), angles.sin(), is_interleaved=False)[1] is not None
