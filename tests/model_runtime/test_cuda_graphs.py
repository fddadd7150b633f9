"""Decode steps through `DecodeGraphs`: buckets, padding rows, and graph == eager on CUDA.

CPU cannot capture a CUDA graph, so the CPU tests replace the capture by an eager
forward over the same static, padded inputs: that checks everything the graph would
read (static metadata, padding rows writing the scratch block, bucketed context)
except the capture itself, which the `gpu` test covers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_runtime.engine.cuda_graphs import DecodeGraphs, _Graph, can_capture
from model_runtime.engine.llm import LLM, EngineConfig
from model_runtime.engine.paged_attention import PagedLatentAttention
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.init_tiny import init_tiny
from model_runtime.loader import load_model

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
PROMPT_LENGTHS = (3, 17, 9, 30, 1)  # five sequences: batch padded to 8, contexts across block buckets


class EagerReplay:
    """Stands in for a captured graph on CPU: the same forward over the static inputs."""

    def __init__(self, graphs: DecodeGraphs, graph: _Graph) -> None:
        self.graphs, self.static = graphs, graph

    def replay(self) -> None:
        self.graphs.attention.set_batch(self.static.batch)
        self.static.logits = self.graphs.model.forward_tokens(self.static.input_ids, self.static.positions, self.graphs.attention)


class EagerDecodeGraphs(DecodeGraphs):
    def _capture(self, num_seqs: int, num_blocks: int) -> _Graph:
        graph = self._static(num_seqs, num_blocks)
        graph.graph = EagerReplay(self, graph)  # type: ignore[assignment]
        self.graphs[(num_seqs, num_blocks)] = graph
        return graph


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny(tmp_path_factory.mktemp("tiny-int4"), int4=True)


def prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 700, (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]


def test_padded_shapes_round_batch_up_to_the_list_and_blocks_to_a_power_of_two():
    attention = PagedLatentAttention(torch.zeros(1, 101, 4, 8))
    graphs = DecodeGraphs(torch.nn.Identity(), attention, scratch_block=100, dtype=torch.float32, device=torch.device("cpu"))
    assert graphs.padded_shape(1, 1) == (1, 1)
    assert graphs.padded_shape(5, 3) == (8, 4)
    assert graphs.padded_shape(64, 65) == (64, 100)  # capped at the cache's blocks
    assert graphs.padded_shape(513, 1) is None  # past the largest captured batch: eager
    assert graphs.padded_shape(1, 101) is None


def test_cpu_runner_has_no_graphs(checkpoint: Path):
    model = load_model(checkpoint, dtype=torch.float32)
    assert not can_capture(model, torch.device("cpu"))
    with LLM.from_model(model, None, EngineConfig(block_size=4, num_kv_blocks=64)) as llm:
        assert llm.engine.runner.graphs is None


def test_padded_static_decode_equals_eager_decode_on_cpu(checkpoint: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MOE_SWARM_CPU_KERNELS", "0")  # the torch attention and its cache layout, as on CUDA
    model = load_model(checkpoint, dtype=torch.float32)
    config = EngineConfig(block_size=4, num_kv_blocks=64)
    with LLM.from_model(model, None, config) as llm:
        expected = [o.token_ids for o in llm.generate(prompts(), GREEDY)]
    with LLM.from_model(model, None, config) as llm:
        runner = llm.engine.runner
        cache = runner.attention.kv_cache
        runner.attention = PagedLatentAttention(torch.zeros(cache.shape[0], cache.shape[1] + 1, *cache.shape[2:]))
        runner.graphs = EagerDecodeGraphs(model, runner.attention, scratch_block=cache.shape[1], dtype=torch.float32, device=torch.device("cpu"))
        outputs = [o.token_ids for o in llm.generate(prompts(), GREEDY)]
        assert 8 in {batch for batch, _ in runner.graphs.graphs}  # the five sequences, padded
    assert outputs == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_decode_equals_eager_decode_on_cuda(checkpoint: Path):
    model = load_model(checkpoint, dtype=torch.float32, device="cuda")
    outputs = {}
    for is_eager in (True, False):
        config = EngineConfig(block_size=4, num_kv_blocks=64, enforce_eager=is_eager)
        with LLM.from_model(model, None, config, dtype=torch.float32, device="cuda") as llm:
            outputs[is_eager] = [o.token_ids for o in llm.generate(prompts(), GREEDY)]
            graphs = llm.engine.runner.graphs
            assert (graphs is None) == is_eager
            if graphs is not None:
                assert len(graphs.graphs) >= 2  # decode steps did replay
    assert outputs[False] == outputs[True]
