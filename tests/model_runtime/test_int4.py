"""INT4 packing (compressed-tensors pack-quantized layout) and the packed-expert memory saving."""

from __future__ import annotations

import pytest
import torch

from model_runtime.config import ModelConfig
from model_runtime.layers.moe import DenseExperts
from model_runtime.loader import build_empty_model
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
