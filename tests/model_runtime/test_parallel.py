"""Tensor/expert parallelism on CPU: real worker processes, real gloo.

tp=2 must decode exactly like tp=1 and like transformers' DeepseekV3 (float32), for a
bf16 checkpoint and an INT4-expert one; a worker that dies or fails must surface as a
`WorkerError` naming its rank; and no worker process may outlive the engine, whether it
was closed, failed, interrupted with Ctrl-C, or its rank 0 was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from model_runtime import load_model
from model_runtime.engine.errors import EngineClosedError, WorkerError
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.errors import ParallelConfigError
from model_runtime.init_tiny import init_tiny
from model_runtime.testing import random_weights, tiny_config, write_checkpoint
from tests.model_runtime.oracle import assert_close_to_oracle, reference_model

MAX_TOKENS = 6
ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "bf16": init_tiny(tmp_path_factory.mktemp("bf16"), dtype=torch.bfloat16),
        "int4": init_tiny(tmp_path_factory.mktemp("int4"), int4=True),
    }


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait() is missing


def _wait_gone(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if _is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _our_workers() -> list[int]:
    """Live worker processes whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"worker_main" in cmdline and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("kind", ["bf16", "int4"])
def test_tp2_greedy_decodes_like_tp1_and_transformers(checkpoints: dict[str, Path], kind: str) -> None:
    path = checkpoints[kind]
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 700, (n,), generator=gen).tolist() for n in (2, 11, 23)]
    hf = reference_model(path)
    with torch.no_grad():
        expected = [
            hf.generate(torch.tensor([p]), max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(p) :].tolist()
            for p in prompts
        ]
    config = EngineConfig(block_size=4, num_kv_blocks=128)
    with LLM(path, dtype=torch.float32, config=config) as llm:
        tp1 = [o.token_ids for o in llm.generate(prompts, GREEDY)]
    with LLM(path, dtype=torch.float32, config=config, tensor_parallel_size=2) as llm:
        pids = llm.engine.runner.group.worker_pids
        assert len(pids) == 1 and all(_is_alive(p) for p in pids)
        tp2 = [o.token_ids for o in llm.generate(prompts, GREEDY)]
        ids = torch.tensor([prompts[2]])
        logits = llm.engine.runner.whole_sequence_logits(ids)  # [1, T, V]
    assert tp2 == tp1 == expected
    torch.testing.assert_close(logits, load_model(path, dtype=torch.float32)(ids), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert_close_to_oracle(logits, hf(ids).logits)
    assert _wait_gone(pids, timeout_s=0.5) == []  # close() waited for them


def test_tp2_with_speculative_decoding_keeps_the_greedy_output(checkpoints: dict[str, Path]) -> None:
    """Drafts reach the workers with their step (StepSeq.draft) and change nothing."""
    gen = torch.Generator().manual_seed(2)
    pattern = torch.randint(0, 700, (5,), generator=gen).tolist()
    prompts = [pattern * 4, torch.randint(0, 700, (9,), generator=gen).tolist()]
    params = SamplingParams(temperature=0, max_tokens=80, ignore_eos=True)
    with LLM(checkpoints["bf16"], dtype=torch.float32, config=EngineConfig(block_size=4, num_kv_blocks=128)) as llm:
        tp1 = [o.token_ids for o in llm.generate(prompts, params)]
    config = EngineConfig(block_size=4, num_kv_blocks=128, num_speculative_tokens=4)
    with LLM(checkpoints["bf16"], dtype=torch.float32, config=config, tensor_parallel_size=2) as llm:
        tp2 = [o.token_ids for o in llm.generate(prompts, params)]
        assert llm.stats.num_accepted_draft_tokens > 0
    assert tp2 == tp1


def test_each_rank_holds_its_part_only(checkpoints: dict[str, Path]) -> None:
    """Rank 0 of 2: half the heads, half the experts (still packed INT4), half the vocabulary."""
    with LLM(checkpoints["int4"], dtype=torch.float32, config=EngineConfig(num_kv_blocks=16), tensor_parallel_size=2) as llm:
        model = llm.engine.runner.model
        config = model.config
        attn, moe = model.model.layers[1].self_attn, model.model.layers[1].mlp
        assert attn.num_heads == config.num_attention_heads // 2
        assert attn.kv_b_proj.weight.shape[0] == config.num_attention_heads // 2 * (config.qk_nope_head_dim + config.v_head_dim)
        assert attn.kv_a_proj_with_mqa.weight.shape[0] == config.kv_lora_rank + config.qk_rope_head_dim
        assert moe.experts.num_experts == config.n_routed_experts // 2 and moe.experts.w13_packed.dtype == torch.int32
        assert model.lm_head.weight.shape[0] == config.vocab_size // 2
        # Picking out the own experts' pairs syncs with the host: never inside a CUDA graph.
        assert not moe.experts.supports_cuda_graphs(torch.device("cuda")) and llm.engine.runner.graphs is None


def test_worker_killed_mid_generation_raises_worker_error_and_leaves_no_process(checkpoints: dict[str, Path]) -> None:
    llm = LLM(checkpoints["bf16"], dtype=torch.float32, config=EngineConfig(num_kv_blocks=512), tensor_parallel_size=2)
    pids = llm.engine.runner.group.worker_pids
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=5000, ignore_eos=True))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    thread = threading.Thread(target=generate)
    thread.start()
    deadline = time.monotonic() + 30
    while llm.stats.num_steps < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=30)
    llm.close()
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], EngineClosedError)
    cause = errors[0].__cause__
    assert isinstance(cause, WorkerError) and "rank 1 was killed by SIGKILL" in str(cause)
    assert _wait_gone(pids) == [] and _our_workers() == []


def test_worker_failing_to_load_names_its_rank_and_error(tmp_path: Path) -> None:
    """Expert 7 (rank 1's) is missing: rank 0 loads fine, rank 1 fails, LLM() says so."""
    config = tiny_config()
    weights = {k: v for k, v in random_weights(config).items() if ".experts.7." not in k}
    path = write_checkpoint(tmp_path, config, weights)
    with pytest.raises(WorkerError, match=r"rank 1 failed: CheckpointError: .*experts\.7"):
        LLM(path, dtype=torch.float32, config=EngineConfig(num_kv_blocks=16), tensor_parallel_size=2)
    assert _our_workers() == []


def test_sizes_that_do_not_split_the_model_are_refused_before_starting(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ParallelConfigError, match="tensor_parallel_size 3 does not divide num_attention_heads 4"):
        LLM(checkpoints["bf16"], dtype=torch.float32, tensor_parallel_size=3)
    assert _our_workers() == []


_DRIVER = textwrap.dedent(
    """
    import json, sys, torch
    from model_runtime.engine.llm import LLM, EngineConfig
    from model_runtime.engine.sampling_params import SamplingParams

    llm = LLM(sys.argv[1], dtype=torch.float32, config=EngineConfig(num_kv_blocks=512), tensor_parallel_size=2)
    group = llm.engine.runner.group
    print(json.dumps([group.worker_pids, group.rendezvous_dir]), flush=True)
    while True:  # never closed: Ctrl-C or a kill must still take the workers down
        llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=5000, ignore_eos=True))
    """
)


def _start_driver(path: Path) -> tuple[subprocess.Popen[str], list[int], Path]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _DRIVER, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    pids, rendezvous = json.loads(process.stdout.readline())  # type: ignore[union-attr]
    time.sleep(0.5)  # mid-generation
    assert all(_is_alive(p) for p in pids) and Path(rendezvous).is_dir()
    return process, pids, Path(rendezvous)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "rank0-killed"])
def test_no_worker_outlives_its_rank0(checkpoints: dict[str, Path], sig: signal.Signals) -> None:
    process, pids, rendezvous = _start_driver(checkpoints["bf16"])
    try:
        process.send_signal(sig)
        process.wait(timeout=30)
        assert _wait_gone(pids) == []
        assert not rendezvous.exists()  # the file store's directory, removed by whoever is left
    finally:
        process.kill()
        process.wait()


def test_server_on_tp2_answers_the_openai_client_like_tp1(checkpoints: dict[str, Path]) -> None:
    import openai
    import uvicorn

    from model_runtime.server import create_app

    path, prompt = checkpoints["bf16"], "Hello world"
    config = EngineConfig(num_kv_blocks=64)
    with LLM(path, dtype=torch.float32, config=config) as llm:
        expected = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0].text
    with LLM(path, dtype=torch.float32, config=config, tensor_parallel_size=2) as llm:
        server = uvicorn.Server(uvicorn.Config(create_app(llm, model_name="tiny"), host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert reply.choices[0].text == expected


def test_swarm_serve_takes_tensor_parallel_size(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    import model_runtime.server
    from model_runtime.cli import serve_command

    calls: list[dict] = []
    monkeypatch.setattr(model_runtime.server, "serve", lambda model_dir, **kwargs: calls.append(kwargs))
    app = typer.Typer()
    app.command()(serve_command)
    ok = CliRunner().invoke(app, ["--model", str(checkpoints["bf16"]), "--tensor-parallel-size", "2"])
    assert ok.exit_code == 0 and calls[0]["tensor_parallel_size"] == 2
    bad = CliRunner().invoke(app, ["--model", str(checkpoints["bf16"]), "--tensor-parallel-size", "0"])
    assert bad.exit_code == 2 and "at least 1" in bad.output


@pytest.mark.parametrize("storage", ["bf16", "int4", "fp8"])
def test_each_rank_reads_exactly_its_slices(tmp_path: Path, storage: str) -> None:
    """Sharded loads (no processes) hold the same numbers as slices of the whole model;
    FP8 with a dense MLP whose split (192 rows) falls inside a 128-row scale block."""
    from model_runtime.config import ModelConfig
    from model_runtime.loader import build_meta_model, load_weights, materialize
    from model_runtime.parallel import shard_model
    from model_runtime.testing import write_tiny_checkpoint

    options = {"bf16": dict(dtype=torch.bfloat16), "int4": dict(int4=True), "fp8": dict(fp8=True, model_type="deepseek_v3", intermediate_size=384)}[storage]
    path = write_tiny_checkpoint(tmp_path, num_shards=2, **options)
    whole = load_model(path, dtype=torch.float32).state_dict()
    for rank in range(2):
        model = build_meta_model(ModelConfig.from_path(path), torch.float32)
        narrows = shard_model(model, rank, 2)
        model = materialize(model, "cpu")
        load_weights(model, path, narrows)
        for name, value in model.state_dict().items():
            narrow = narrows.get(name) or narrows.get(name.rsplit(".", 1)[0])  # experts: keyed by module
            expected = whole[name] if narrow is None else whole[name].narrow(narrow.dim, narrow.start, narrow.length)
            if narrow is not None and narrow.length == 0:
                expected = torch.zeros_like(value)
            assert torch.equal(value, expected), (rank, name)


def test_row_parallel_bias_is_added_once(tmp_path: Path) -> None:
    """With attention biases, o_proj's bias lives on rank 0 only, so the all-reduce adds it once."""
    config = tiny_config(attention_bias=True)
    weights = random_weights(config)
    gen = torch.Generator().manual_seed(3)
    for name in [n for n in weights if n.endswith(("q_a_proj.weight", "kv_a_proj_with_mqa.weight", "o_proj.weight"))]:
        weights[name.removesuffix("weight") + "bias"] = 0.5 * torch.randn(weights[name].shape[0], generator=gen)
    path = write_checkpoint(tmp_path, config, weights)
    ids = torch.randint(0, 256, (1, 9), generator=gen)
    with LLM(path, dtype=torch.float32, config=EngineConfig(num_kv_blocks=16), tensor_parallel_size=2) as llm:
        logits = llm.engine.runner.whole_sequence_logits(ids)
    with torch.no_grad():
        assert_close_to_oracle(logits, reference_model(path)(ids).logits)
