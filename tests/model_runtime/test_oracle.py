"""Our model against transformers' DeepseekV3ForCausalLM (float32) on tiny random checkpoints."""

from __future__ import annotations

import pytest
import torch

from model_runtime import DenseLatentCache, load_model
from model_runtime.testing import write_tiny_checkpoint
from tests.model_runtime.oracle import assert_close_to_oracle, reference_logits

CONFIGS = {
    "kimi_k2_yarn_qlora": {},
    "grouped_no_qlora_2shared": dict(
        model_type="deepseek_v3", q_lora_rank=None, n_group=4, topk_group=2, n_shared_experts=2,
        num_experts_per_tok=3, rope_scaling={"type": "yarn", "factor": 40.0, "beta_fast": 32, "beta_slow": 1,
        "mscale": 1.0, "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096},
    ),
    "int4_experts": dict(int4=True),
    "kimi_k25_two_shards": dict(kimi_k25=True, num_shards=2),
    "fp8_blocks": dict(fp8=True, model_type="deepseek_v3"),
    "tied_plain_rope": dict(tie_word_embeddings=True, rope_scaling=None, first_k_dense_replace=0),
}


@pytest.fixture
def input_ids() -> torch.Tensor:
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_whole_sequence_logits_match_oracle(tmp_path, input_ids, name):
    path = write_tiny_checkpoint(tmp_path, **CONFIGS[name])
    logits = load_model(path, dtype=torch.float32)(input_ids)
    assert_close_to_oracle(logits, reference_logits(path, input_ids))


@pytest.mark.parametrize("name", ["kimi_k2_yarn_qlora", "grouped_no_qlora_2shared", "int4_experts"])
def test_cached_forward_tokens_match_oracle(tmp_path, input_ids, name):
    """Prefill both sequences together, then decode them token by token in one flat batch."""
    path = write_tiny_checkpoint(tmp_path, **CONFIGS[name])
    model = load_model(path, dtype=torch.float32)
    cache = DenseLatentCache(model.config.num_hidden_layers)
    prefill = 5
    cache.set_batch(["a", "b"], [prefill, prefill])
    first = model.forward_tokens(input_ids[:, :prefill].reshape(-1), torch.arange(prefill).repeat(2), cache)
    steps = [first.view(2, prefill, -1)]
    for pos in range(prefill, input_ids.shape[1]):
        cache.set_batch(["a", "b"], [1, 1])
        logits = model.forward_tokens(input_ids[:, pos], torch.tensor([pos, pos]), cache)  # [2, V]
        steps.append(logits[:, None])
    assert_close_to_oracle(torch.cat(steps, dim=1), reference_logits(path, input_ids))


def test_logits_indices_select_rows(tmp_path, input_ids):
    model = load_model(write_tiny_checkpoint(tmp_path), dtype=torch.float32)
    full = model(input_ids[:1])[0]  # [T, V]
    cache = DenseLatentCache(model.config.num_hidden_layers)
    cache.set_batch([0], [input_ids.shape[1]])
    last = model.forward_tokens(input_ids[0], torch.arange(input_ids.shape[1]), cache, torch.tensor([11]))
    torch.testing.assert_close(last, full[11:])


def test_bf16_top1_agreement_with_fp32_oracle(tmp_path):
    """bf16 weights and activations against the float32 oracle: top-1 agreement, printed."""
    path = write_tiny_checkpoint(tmp_path)
    ids = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(5))
    reference = reference_logits(path, ids)
    logits = load_model(path, dtype=torch.bfloat16)(ids).float()
    agreement = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    error = ((logits - reference).abs().max() / reference.abs().max()).item()
    print(f"bf16 vs fp32 oracle: top-1 agreement {agreement:.1%} over {ids.numel()} positions, max rel err {error:.2e}")
    assert agreement >= 0.9


def test_kimi_k25_vision_tensors_are_skipped_with_a_note(tmp_path, caplog):
    path = write_tiny_checkpoint(tmp_path, kimi_k25=True)
    with caplog.at_level("WARNING", logger="model_runtime.loader"):
        model = load_model(path, dtype=torch.float32)
    assert "vision" in caplog.text
    assert model.config.weight_prefix == "language_model." and model.config.has_vision
