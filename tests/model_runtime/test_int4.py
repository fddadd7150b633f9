"""INT4 packing (compressed-tensors pack-quantized layout) and the packed-expert memory saving."""

from __future__ import annotations

import pytest
import torch

from model_runtime.config import ModelConfig
from model_runtime.layers.moe import DenseExperts
from model_runtime.loader import build_empty_model
from model_runtime.quant import int4
from model_runtime.quant.int4 import Int4Experts, pack_int4, unpack_int4
from model_runtime.testing import tiny_config
from tests.model_runtime.oracle import reference_unpack_int4


def test_packer_matches_reference_unpacking():
    weight = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    packed, scale = pack_int4(weight, 32)
    assert packed.dtype == torch.int32 and packed.shape == (48, 12)
    assert scale.dtype == torch.bfloat16 and scale.shape == (48, 3)
    torch.testing.assert_close(unpack_int4(packed, scale), reference_unpack_int4(packed, scale), rtol=0, atol=0)


def test_quantization_error_is_within_half_a_step():
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    packed, scale = pack_int4(weight, 32)
    step = scale.float().repeat_interleave(32, dim=1)
    assert ((unpack_int4(packed, scale) - weight).abs() <= step * 0.5 + 1e-6).all()


def test_nibble_order_lowest_first():
    """Column 8k+j lives in bits 4j..4j+3 of word k, stored as q + 8."""
    weight = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 7] + [-7.0] * 24])  # scale = 7/7 = 1
    packed, _ = pack_int4(weight, 32)
    words = packed[0].tolist()
    assert words[0] & 0xFFFFFFFF == 0xFEDCBA98  # q + 8 = 8..15, lowest nibble first
    assert words[1] == 0x11111111  # -7 + 8 = 1 in every nibble


def test_int4_experts_resident_bytes_at_most_030_of_bf16():
    config = ModelConfig.from_dict(tiny_config(hidden_size=128, moe_intermediate_size=64))
    dense = build_empty_model(config, torch.bfloat16, "meta").model.layers[1].mlp.experts
    assert isinstance(dense, DenseExperts)
    packed = Int4Experts(dense.num_experts, dense.dim, dense.hidden_dim, 32)
    dense_bytes = sum(p.numel() * p.element_size() for p in dense.parameters())
    packed_bytes = sum(b.numel() * b.element_size() for b in packed.buffers())
    assert packed_bytes / dense_bytes <= 0.3


def test_packer_matches_compressed_tensors_if_installed():
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    packed, scale = pack_int4(weight, 32)
    q = helpers.unpack_from_int32(packed, 4, torch.Size([32, 64]))  # int8 in [-8, 7]
    expected = (q.float().view(32, 2, 32) * scale.float()[..., None]).view(32, 64)
    torch.testing.assert_close(unpack_int4(packed, scale), expected, rtol=0, atol=0)
    assert torch.equal(helpers.pack_to_int32(q, 4), packed)


def _random_int4_experts(num_experts: int = 4, dim: int = 64, hidden: int = 32) -> Int4Experts:
    dense = DenseExperts(num_experts, dim, hidden)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        dense.w13.copy_(torch.randn(dense.w13.shape, generator=generator) * 0.1)
        dense.w2.copy_(torch.randn(dense.w2.shape, generator=generator) * 0.1)
    return Int4Experts.from_dense(dense)


def test_small_cpu_layers_keep_one_dequantized_copy_with_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    experts = _random_int4_experts()
    generator = torch.Generator().manual_seed(4)
    for num_tokens in (1, 5, 64):  # the dense, grouped and per-expert paths
        x = torch.randn(num_tokens, 64, generator=generator)
        topk_idx = torch.stack([torch.randperm(4, generator=generator)[:2] for _ in range(num_tokens)])
        topk_w = torch.rand(num_tokens, 2, generator=generator)
        cached = experts(x, topk_idx, topk_w)
        with monkeypatch.context() as patch:
            patch.setattr(int4, "CPU_DEQUANTIZED_MAX_BYTES", 0)  # packed: unpack per busy expert
            assert experts.stacked_weights(torch.float32) is None
            unpacked = experts(x, topk_idx, topk_w)
        torch.testing.assert_close(cached, unpacked, rtol=1e-5, atol=1e-6)
    w13, _ = experts.stacked_weights(torch.float32)
    assert experts.stacked_weights(torch.float32)[0] is w13  # kept, not remade per call
    assert "_dequantized" not in str(experts.state_dict().keys())


def test_the_dequantized_copy_follows_writes_to_the_packed_weights() -> None:
    experts = _random_int4_experts()
    before = experts.stacked_weights(torch.float32)[0].clone()
    replacement = _random_int4_experts()
    replacement.w13_scale.mul_(2)
    with torch.no_grad():
        experts.w13_packed.copy_(replacement.w13_packed)  # in place, as a loader writes
        experts.w13_scale.copy_(replacement.w13_scale)
    after = experts.stacked_weights(torch.float32)[0]
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, unpack_int4(replacement.w13_packed, replacement.w13_scale), rtol=0, atol=0)
