"""`EngineConfig.cpu_threads`: the engine's loop thread sets its own intra-op threads only."""

from __future__ import annotations

import torch

from model_runtime.engine.llm import LLM, SMALL_MODEL_MAX_PARAMS, EngineConfig, engine_cpu_threads
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.init_tiny import init_tiny


def test_engine_thread_uses_its_own_thread_count_and_the_callers_keeps_its(tmp_path) -> None:
    path = init_tiny(tmp_path / "tiny")
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2  # differs from the caller's, so the test can fail
    seen: list[int] = []
    with LLM(path, dtype=torch.float32, config=EngineConfig(cpu_threads=wanted, num_kv_blocks=64)) as llm:
        real_step = llm.engine.step

        def step():  # runs on the engine's loop thread
            seen.append(torch.get_num_threads())
            return real_step()

        llm.engine.step = step  # type: ignore[method-assign]
        out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(out[0].token_ids) == 3
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before


def test_a_small_model_gets_one_engine_thread_by_default() -> None:
    tiny = torch.nn.Linear(64, 64)
    assert engine_cpu_threads(EngineConfig(), tiny) == 1
    assert engine_cpu_threads(EngineConfig(cpu_threads=3), tiny) == 3


def test_a_large_model_keeps_torchs_thread_count_by_default() -> None:
    with torch.device("meta"):  # the parameter count without the memory
        large = torch.nn.Linear(4096, SMALL_MODEL_MAX_PARAMS // 4096 + 1)
    assert engine_cpu_threads(EngineConfig(), large) is None


def test_the_tiny_checkpoints_engine_thread_runs_single_threaded_by_default(tmp_path) -> None:
    path = init_tiny(tmp_path / "tiny")
    seen: list[int] = []
    with LLM(path, dtype=torch.float32, config=EngineConfig(num_kv_blocks=64)) as llm:
        real_step = llm.engine.step

        def step():  # runs on the engine's loop thread
            seen.append(torch.get_num_threads())
            return real_step()

        llm.engine.step = step  # type: ignore[method-assign]
        llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    assert seen and set(seen) == {1}
