"""FP8 block-scaled dequantization, whole blocks and ragged edges, against the oracle's."""

from __future__ import annotations

import pytest
import torch

from model_runtime.errors import ShapeMismatchError
from model_runtime.quant.fp8 import dequantize_fp8_blocks, quantize_fp8_blocks
from tests.model_runtime.oracle import reference_dequant_fp8


@pytest.mark.parametrize("shape", [(256, 384), (200, 130)])
def test_dequantize_matches_reference(shape):
    weight, scale_inv = quantize_fp8_blocks(torch.randn(*shape, generator=torch.Generator().manual_seed(0)))
    assert scale_inv.shape == (-(-shape[0] // 128), -(-shape[1] // 128))
    result = dequantize_fp8_blocks(weight, scale_inv, (128, 128), torch.float32)
    torch.testing.assert_close(result, reference_dequant_fp8(weight, scale_inv), rtol=0, atol=0)


def test_wrong_scale_shape_names_the_tensor():
    weight, scale_inv = quantize_fp8_blocks(torch.randn(256, 256))
    with pytest.raises(ShapeMismatchError, match="layers.0.q_b_proj.weight_scale_inv"):
        dequantize_fp8_blocks(weight, scale_inv[:1], (128, 128), torch.bfloat16, name="layers.0.q_b_proj")
