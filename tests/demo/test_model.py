"""The demo model: training sees the logits serving computes; a short run trains and exports."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from demo import train
from demo.model import DEMO_GROUP_SIZE, build_model, demo_config, export_checkpoint, grow_layers, load_checkpoint_weights, train_logits
from demo.trajectories import sample_conversation
from model_runtime import load_model
from model_runtime.tokenizer import KimiTokenizer

TINY = {"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
        "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}  # fmt: skip


def _model(tokenizer: KimiTokenizer) -> tuple[dict, torch.nn.Module]:
    config = demo_config(tokenizer.vocab_size, **TINY)
    model = build_model(config, seed=1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.2)  # large enough that a wrong path would show
    return config, model


def test_training_forward_equals_the_inference_forward(tokenizer: KimiTokenizer) -> None:
    _, model = _model(tokenizer)
    ids = torch.randint(0, tokenizer.vocab_size, (2, 40))
    expected = model.eval()(ids)
    got = train_logits(model, ids)
    assert got.requires_grad
    torch.testing.assert_close(got.detach(), expected, atol=1e-4, rtol=1e-4)


def test_exported_checkpoint_loads_with_the_same_logits(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    ids = torch.randint(0, tokenizer.vocab_size, (1, 30))
    path = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt", int4=False, dtype=torch.float32)
    torch.testing.assert_close(load_model(path, dtype=torch.float32)(ids), model(ids))
    assert KimiTokenizer.from_dir(path).encode("<|im_end|>") == tokenizer.encode("<|im_end|>")


def test_int4_export_quantizes_routed_experts_only(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    path = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt4")
    written = json.loads((path / "config.json").read_text())
    assert written["quantization_config"]["format"] == "pack-quantized"
    loaded = load_model(path, dtype=torch.float32)
    assert type(loaded.model.layers[1].mlp.experts).__name__ == "Int4Experts"
    assert written["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == DEMO_GROUP_SIZE


def test_a_finer_int4_group_is_closer_to_the_trained_weights(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    dense = model.model.layers[1].mlp.experts.w13.detach().clone()

    def error(group_size: int) -> float:
        path = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / f"g{group_size}", group_size=group_size)
        fresh = build_model(config, seed=1)
        load_checkpoint_weights(fresh, path)  # INT4 experts dequantized
        return float((fresh.model.layers[1].mlp.experts.w13 - dense).abs().mean())

    assert 0 < error(8) < error(32)


def test_twenty_steps_train_and_export(tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "tokenizer").mkdir(parents=True)
    for name in ("tiktoken.model", "tokenizer_config.json"):
        (out / "tokenizer" / name).write_bytes((tokenizer_dir / name).read_bytes())
    args = [str(out), "--steps", "20", "--eval-every", "20", "--batch-tokens", "1024", "--max-len", "700",
            "--max-single-entities", "2", "--warmup", "5", "--config", json.dumps(TINY)]  # fmt: skip
    train.main([*args, "--until", "12", "--no-export"])  # a first phase, then the rest resumed
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 12
    train.main([*args, "--resume"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "url_copy" in r] == [12, 20]
    assert records[-2]["step"] == 20 and "url_copy" in records[-2]
    assert "url_copy" in records[-1]["exported"]  # the checkpoint as shipped, INT4 experts
    assert (out / "checkpoint" / "config.json").is_file()
    assert load_model(out / "checkpoint", dtype=torch.float32) is not None
    # Reproducible: the same phases again give the same weights (a resumed phase draws its
    # batches from its first step's seed, so phases are part of the recipe).
    again = tmp_path / "again"
    shutil.copytree(out / "tokenizer", again / "tokenizer")
    train.main([str(again), *args[1:], "--until", "12", "--no-export"])
    train.main([str(again), *args[1:], "--resume", "--no-export"])
    first = torch.load(out / "state.pt", weights_only=False)["model"]
    for name, tensor in torch.load(again / "state.pt", weights_only=False)["model"].items():
        assert torch.equal(tensor, first[name]), name
    # A warm restart: the next phase warms up again from its first step, then decays to its --steps.
    train.main([*args, "--resume", "--warm-restart", "--steps", "30", "--until", "21", "--no-export"])
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 21 and record["lr"] == pytest.approx(2e-3 / 5)


def test_an_int4_checkpoint_loads_back_into_a_training_model(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    """`--init`'s inverse of the export: the same logits as the runtime gets from the checkpoint."""
    config, model = _model(tokenizer)
    path = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt4")
    fresh = build_model(config, seed=2)
    load_checkpoint_weights(fresh, path)
    ids = torch.randint(0, tokenizer.vocab_size, (1, 30))
    served = load_model(path, dtype=torch.float32)(ids)
    torch.testing.assert_close(train_logits(fresh, ids).detach(), served, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(train_logits(build_model(config, seed=2), ids), served, atol=1e-2)  # it did load something


def test_a_run_starts_from_an_exported_checkpoint(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    ckpt = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt4")
    out = tmp_path / "run"
    train.main([str(out), "--init", str(ckpt), "--steps", "2", "--eval-every", "100", "--batch-tokens", "1024",
                "--max-len", "700", "--max-single-entities", "2", "--warmup", "1", "--no-export"])  # fmt: skip
    first, last = (json.loads(line) for line in (out / "log.jsonl").read_text().splitlines())
    assert first["step"] == 0 and first["init"] == str(ckpt) and "url_copy" in first  # the start, measured
    assert last["step"] == 2
    assert (out / "tokenizer" / "tiktoken.model").read_bytes() == (ckpt / "tiktoken.model").read_bytes()
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["config"]["hidden_size"] == TINY["hidden_size"] and "quantization_config" not in state["config"]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--resume"], "not both"),
        (["--export-only"], "not both"),
        ([], "not an exported checkpoint (missing config.json"),
    ],
)
def test_bad_init_is_a_usage_error(option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        train.main([str(tmp_path / "run"), "--init", str(tmp_path / "empty"), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_wide_power_that_draws_no_task_size_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        train.main([str(tmp_path / "run"), "--wide-power", "0"])
    assert exit_.value.code == 2 and "--wide-power must be above 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_curriculum_trains_on_sub_agents_first_then_the_mix(
    tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    (out / "tokenizer").mkdir(parents=True)
    for name in ("tiktoken.model", "tokenizer_config.json"):
        (out / "tokenizer" / name).write_bytes((tokenizer_dir / name).read_bytes())
    drawn: list[tuple[float, float, str]] = []

    def sample(rng: random.Random, **options: Any) -> Any:
        conversation = sample_conversation(rng, **options)
        drawn.append((*options["mix"], conversation.role))
        return conversation

    monkeypatch.setattr(train, "sample_conversation", sample)
    train.main([str(out), "--steps", "6", "--subagents-first", "3", "--mix", "0,1", "--eval-every", "100", "--batch-tokens", "1024",
                "--max-len", "700", "--warmup", "2", "--config", json.dumps(TINY), "--no-export"])  # fmt: skip
    first = [d for d in drawn if d[:2] == (1.0, 0.0)]
    assert first and {role for *_, role in first} == {"subagent"}
    assert drawn[: len(first)] == first  # the mix only after the curriculum
    rest = drawn[len(first) :]
    assert rest and {d[:2] for d in rest} == {(0.0, 1.0)} and {role for *_, role in rest} == {"orchestrator"}
    assert "step 3: sub-agents-only curriculum over" in capsys.readouterr().out


@pytest.mark.parametrize(
    "option, message",
    [
        (["--mix", "0.5"], "--mix takes two shares"),
        (["--mix", "0.8,0.4"], "add up to at most 1"),
        (["--mix=-0.1,0.5"], "at least 0"),
    ],
)
def test_bad_mixtures_are_usage_errors(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        train.main([str(tmp_path / "run"), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("step, expected", [(0, 2e-3 / 5), (4, 2e-3), (100, 2e-4)])
def test_learning_rate_warms_up_then_decays(step: int, expected: float) -> None:
    assert train.learning_rate(step, 100, 2e-3, 5) == pytest.approx(expected)


def test_grown_layers_compute_what_the_model_did_until_trained(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    grown, grown_config = grow_layers(model, config, [1, 1])
    assert grown_config["num_hidden_layers"] == 4 and config["num_hidden_layers"] == 2
    assert [type(layer.mlp).__name__ for layer in grown.model.layers] == ["SwiGLU", "MoE", "MoE", "MoE"]
    ids = torch.randint(0, tokenizer.vocab_size, (2, 40))
    before = train_logits(model, ids).detach()
    torch.testing.assert_close(train_logits(grown, ids).detach(), before)
    new = grown.model.layers[2]
    assert torch.equal(new.self_attn.q_proj.weight, model.model.layers[1].self_attn.q_proj.weight)  # a copy ...
    assert not new.self_attn.o_proj.weight.any() and not new.mlp.experts.w2.any()  # ... that writes nothing yet
    train_logits(grown, ids).logsumexp(-1).mean().backward()
    assert new.self_attn.o_proj.weight.grad.abs().sum() > 0  # training reaches it
    path = export_checkpoint(grown.eval(), grown_config, tokenizer_dir, tmp_path / "grown", int4=False, dtype=torch.float32)
    torch.testing.assert_close(load_model(path, dtype=torch.float32)(ids), before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("after", [[], [0], [2], [1, -1]])
def test_growing_after_a_dense_or_missing_layer_is_refused(tokenizer: KimiTokenizer, after: list[int]) -> None:
    config, model = _model(tokenizer)
    with pytest.raises(ValueError, match="indices of MoE layers"):
        grow_layers(model, config, after)


def test_a_run_from_a_checkpoint_grows_it(tokenizer: KimiTokenizer, tokenizer_dir: Path, tmp_path: Path) -> None:
    config, model = _model(tokenizer)
    ckpt = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt4")
    out = tmp_path / "run"
    train.main([str(out), "--init", str(ckpt), "--grow-after", "1", "--digit-weight", "3", "--steps", "2", "--eval-every", "100",
                "--batch-tokens", "1024", "--max-len", "700", "--max-single-entities", "2", "--warmup", "1", "--no-export"])  # fmt: skip
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["config"]["num_hidden_layers"] == 3 and "model.layers.2.mlp.experts.w2" in state["model"]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--grow-after", "1"], "it needs --init"),
        (["--digit-weight", "0"], "--digit-weight must be above 0"),
        (["--miss", "1.5"], "--miss must be between 0 and 1"),
    ],
)
def test_bad_growth_or_digit_weight_is_a_usage_error(option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        train.main([str(tmp_path / "run"), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("grow_after, message", [("x", "takes layer indices"), ("0", "indices of MoE layers")])
def test_growing_a_checkpoint_wrongly_is_a_usage_error(grow_after: str, message: str, tokenizer: KimiTokenizer, tokenizer_dir: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    config, model = _model(tokenizer)
    ckpt = export_checkpoint(model.eval(), config, tokenizer_dir, tmp_path / "ckpt4")
    with pytest.raises(SystemExit) as exit_:
        train.main([str(tmp_path / "run"), "--init", str(ckpt), "--grow-after", grow_after])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_digits_the_assistant_writes_weigh_more(tokenizer: KimiTokenizer) -> None:
    _, model = _model(tokenizer)
    ids = torch.tensor([tokenizer.encode("Employees: 4309 | Employees: 4309 |")])
    is_assistant = torch.zeros_like(ids, dtype=torch.bool)
    is_assistant[0, ids.shape[1] // 2 :] = True
    batch = {"ids": ids, "is_assistant": is_assistant, "is_real": torch.ones_like(is_assistant)}
    digits = train.digit_ids(tokenizer)
    assert sorted(tokenizer.decode([int(i)]) for i in digits) == list("0123456789")
    with torch.no_grad():
        logits = train_logits(model, ids)[0, :-1]
        per_token = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        target_is_digit = torch.isin(ids[0, 1:], digits)
        weight = torch.where(is_assistant[0, 1:], torch.where(target_is_digit, 3.0, 1.0), 0.5)
        expected = (per_token * weight).sum() / weight.sum()
        loss, _ = train.loss_of(model, batch, 0.5, digits=digits, digit_weight=3.0)
        plain, _ = train.loss_of(model, batch, 0.5)
    assert target_is_digit[is_assistant[0, 1:]].any()
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, plain)
