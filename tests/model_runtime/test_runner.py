"""The model runner's step metadata: block tables and the decode bias, built from lists."""

from __future__ import annotations

import torch

from model_runtime.engine.runner import CacheShape, ModelRunner
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.scheduler import ScheduledSeq
from model_runtime.engine.sequence import Sequence
from tests.model_runtime.toy_model import ToyConfig, ToyModel


def decoding(seq_id: int, num_tokens: int, block_table: list[int]) -> ScheduledSeq:
    seq = Sequence(seq_id, list(range(num_tokens)), SamplingParams(), block_table=block_table, num_computed_tokens=num_tokens - 1)
    return ScheduledSeq.of(seq, 1)


def test_decode_context_pads_tables_with_block_0_and_hides_the_padding() -> None:
    config = ToyConfig()
    shape = CacheShape(config.num_hidden_layers, 16, 4, config.kv_lora_rank + config.qk_rope_head_dim)
    runner = ModelRunner(ToyModel(config), shape, dtype=torch.float32, device=torch.device("cpu"))
    items = [decoding(0, 3, [5]), decoding(1, 10, [7, 2, 9]), decoding(2, 8, [4, 6])]
    tables, bias, _ = runner._decode_context([(item.seq.block_table, item.start + 1) for item in items])
    assert tables.tolist() == [[5, 0, 0], [7, 2, 9], [4, 6, 0]]
    expected = torch.zeros(3, 12).masked_fill_(torch.arange(12)[None, :] >= torch.tensor([3, 10, 8])[:, None], float("-inf"))
    assert bias.shape == (3, 1, 12) and torch.equal(bias[:, 0], expected)
    wide = [(list(range(1250)), 5000)]  # wider than the cached mask line: it grows
    _, bias, _ = runner._decode_context(wide)
    assert bias.shape == (1, 1, 5000) and bool((bias == 0).all())
