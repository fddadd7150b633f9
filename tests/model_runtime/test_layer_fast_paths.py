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


# -- fuse_for_inference: the engine's folded and stacked weights -------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # q_lora (Kimi's shape), one shared expert: everything folds and stacks
        {"q_lora_rank": None},  # q_proj straight from the hidden state (the demo model's shape)
        {"n_shared_experts": 2},  # shared expert twice the routed size: not stacked
    ],
)
def test_fused_model_computes_what_the_unfused_one_does(tmp_path, overrides: dict) -> None:  # type: ignore[no-untyped-def]
    from model_runtime import load_model
    from model_runtime.init_tiny import init_tiny

    path = init_tiny(tmp_path, **overrides)
    model = load_model(path, dtype=torch.float32, device="cpu")
    ids = torch.randint(0, 700, (3, 37), generator=torch.Generator().manual_seed(0))  # prefill-sized
    step = ids[:, :1]  # decode-sized: the MoE's all-experts path
    expected, expected_step = model(ids), model(step)
    names = {name: p.shape for name, p in model.named_parameters()}
    model.fuse_for_inference()
    attn, moe_layer = model.model.layers[1].self_attn, model.model.layers[1].mlp
    assert attn.q_folded is not None and attn.o_folded is not None
    assert (moe_layer.with_shared is not None) == (overrides.get("n_shared_experts", 1) == 1)
    torch.testing.assert_close(model(ids), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(step), expected_step, rtol=1e-4, atol=1e-5)
    assert {name: p.shape for name, p in model.named_parameters()} == names  # checkpoints and loaders see the same model


def test_folded_output_keeps_o_projs_bias() -> None:
    from model_runtime.config import ModelConfig
    from model_runtime.layers.mla import MultiHeadLatentAttention
    from model_runtime.layers.latent_cache import DenseLatentCache
    from model_runtime.layers.rope import RotaryEmbedding
    from model_runtime.testing import tiny_config

    config = ModelConfig.from_dict(tiny_config(attention_bias=True))
    torch.manual_seed(0)
    attn = MultiHeadLatentAttention(config, layer_idx=0)
    for param in attn.parameters():
        torch.nn.init.normal_(param, std=0.3)
    x = torch.randn(5, config.hidden_size)  # [N, D]
    cos, sin = rotation_tables(*RotaryEmbedding(config.rope, config.qk_rope_head_dim)(torch.arange(5), torch.float32), is_interleaved=config.rope.is_interleaved)

    def run() -> torch.Tensor:
        cache = DenseLatentCache(1)
        cache.set_batch([0], [5])
        return attn(x, cos, sin, cache)

    expected = run()
    attn.fuse_for_inference()
    assert attn.o_folded is not None and attn.o_proj.bias is not None
    torch.testing.assert_close(run(), expected, rtol=1e-4, atol=1e-5)


def test_stacking_moves_weights_instead_of_copying_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from model_runtime import load_model
    from model_runtime.init_tiny import init_tiny

    model = load_model(init_tiny(tmp_path), dtype=torch.float32, device="cpu")
    moe_layer, dense_mlp = model.model.layers[1].mlp, model.model.layers[0].mlp
    model.fuse_for_inference()
    stacked13, stacked2 = moe_layer.with_shared
    shared = moe_layer.shared_experts
    for view, stack in [
        (moe_layer.experts.w13, stacked13), (shared.gate_proj.weight, stacked13), (shared.up_proj.weight, stacked13),
        (moe_layer.experts.w2, stacked2), (shared.down_proj.weight, stacked2), (dense_mlp.up_proj.weight, dense_mlp.gate_up),
    ]:  # fmt: skip
        assert view.untyped_storage().data_ptr() == stack.untyped_storage().data_ptr()
    with torch.no_grad():  # an in-place update of a parameter is the stack's
        shared.up_proj.weight.fill_(0.5)
    assert bool((stacked13[-1, shared.gate_proj.weight.shape[0] :] == 0.5).all())


def test_kimi_k2_keeps_its_attention_products_and_tiny_models_fold_them() -> None:
    from model_runtime.layers.mla import fold_plan

    # q_in, hidden, heads, kv_lora_rank, qk_nope, qk_rope, v_head_dim
    assert fold_plan(1536, 7168, 64, 512, 128, 64, 128) == (False, False)  # Kimi K2: 2.5x and 3.7x the work
    assert fold_plan(48, 64, 4, 32, 16, 8, 16) == (True, True)  # init-tiny
    assert fold_plan(192, 192, 4, 64, 32, 16, 32) == (True, True)  # the demo model
