"""`EngineConfig.cpu_threads`: the engine's loop thread sets its own intra-op threads only."""

from __future__ import annotations

import torch

from model_runtime.engine.llm import LLM, EngineConfig
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
