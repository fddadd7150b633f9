"""The scheduler and block manager on plain data: no torch, no model."""

from __future__ import annotations

import sys

from model_runtime.engine.block_manager import BlockManager
from model_runtime.engine.sampling_params import SamplingParams
from model_runtime.engine.scheduler import Scheduler, SchedulerConfig
from model_runtime.engine.sequence import Sequence, SequenceStatus

EOS = frozenset({0})


def make(num_blocks: int = 64, block_size: int = 4, **config: int) -> Scheduler:
    return Scheduler(SchedulerConfig(**config), BlockManager(num_blocks, block_size))


def seq(seq_id: int, tokens: list[int], max_tokens: int = 4) -> Sequence:
    return Sequence(seq_id, list(tokens), SamplingParams(max_tokens=max_tokens, temperature=0))


def step(sched: Scheduler, token: int = 7) -> list:
    scheduled = sched.schedule()
    sampled = [token for s in scheduled if s.is_sampled]
    sched.postprocess(scheduled, sampled, EOS)
    return scheduled


def test_scheduler_does_not_import_torch() -> None:
    import model_runtime.engine.scheduler  # noqa: F401

    code = "import sys, model_runtime.engine.scheduler; print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_requests_join_and_leave_the_batch_each_step() -> None:
    sched = make()
    sched.add(seq(1, [1, 2, 3], max_tokens=1))
    sched.add(seq(2, [4, 5, 6, 8, 9], max_tokens=3))
    first = step(sched)
    assert [(s.seq.seq_id, s.num_new_tokens) for s in first] == [(1, 3), (2, 5)]
    assert [s.seq_id for s in sched.running] == [2]  # 1 finished at max_tokens=1
    sched.add(seq(3, [1, 1], max_tokens=2))
    second = step(sched)
    assert [(s.seq.seq_id, s.num_new_tokens) for s in second] == [(2, 1), (3, 2)]


def test_long_prompt_is_prefilled_in_chunks_within_the_budget() -> None:
    sched = make(max_num_batched_tokens=8)
    long_seq = seq(1, list(range(1, 21)))
    sched.add(long_seq)
    chunks = [step(sched)[0].num_new_tokens for _ in range(3)]
    assert chunks == [8, 8, 4]
    assert long_seq.num_output_tokens == 1  # sampled only when the prompt was done


def test_decodes_go_before_new_prefills_and_share_the_budget() -> None:
    sched = make(max_num_batched_tokens=6)
    sched.add(seq(1, [1, 2, 3], max_tokens=10))
    step(sched)
    sched.add(seq(2, list(range(1, 11))))
    scheduled = step(sched)
    assert [(s.seq.seq_id, s.num_new_tokens) for s in scheduled] == [(1, 1), (2, 5)]


def test_eos_and_stop_token_ids_finish_a_sequence() -> None:
    sched = make()
    a = seq(1, [1, 2])
    sched.add(a)
    step(sched, token=0)
    assert a.finish_reason == "stop" and a.output_token_ids == [0]
    b = Sequence(2, [1, 2], SamplingParams(max_tokens=5, stop_token_ids=(9,), ignore_eos=True))
    sched.add(b)
    step(sched, token=0)
    step(sched, token=9)
    assert b.finish_reason == "stop" and b.output_token_ids == [0, 9]


def test_shared_prefix_reuses_cached_blocks_and_counts_hits() -> None:
    sched = make(block_size=4)
    prefix = list(range(10, 22))  # 3 full blocks
    a = seq(1, prefix + [1, 2], max_tokens=1)
    sched.add(a)
    step(sched)
    b = seq(2, prefix + [3], max_tokens=1)
    sched.add(b)
    scheduled = step(sched)
    assert b.num_cached_tokens == 12 and scheduled[0].num_new_tokens == 1
    stats = sched.block_manager.stats
    assert stats.num_hit_tokens == 12 and stats.num_queried_tokens == 14 + 13


def test_whole_prompt_in_cache_still_computes_its_last_token() -> None:
    sched = make(block_size=4)
    prompt = list(range(10, 18))  # exactly 2 blocks
    sched.add(seq(1, prompt, max_tokens=1))
    step(sched)
    again = seq(2, prompt, max_tokens=1)
    sched.add(again)
    assert step(sched)[0].num_new_tokens == 4  # block 1 hit; block 2 holds the last token
    assert again.num_cached_tokens == 4


def test_different_prefix_with_equal_block_does_not_hit() -> None:
    sched = make(block_size=2)
    sched.add(seq(1, [1, 2, 3, 4, 5], max_tokens=1))
    step(sched)
    other = seq(2, [9, 9, 3, 4, 5], max_tokens=1)  # block [3, 4] equal, parent differs
    sched.add(other)
    step(sched)
    assert other.num_cached_tokens == 0


def test_preemption_when_blocks_run_out_then_recompute() -> None:
    sched = make(num_blocks=4, block_size=2, max_num_batched_tokens=64)
    a, b = seq(1, [1, 2, 3], max_tokens=4), seq(2, [4, 5, 6], max_tokens=4)
    sched.add(a)
    sched.add(b)
    step(sched)  # 2 blocks each
    step(sched)  # each computes its 4th token, still in 2 blocks
    step(sched)  # a needs a third block for its 5th token: b is preempted
    assert b.status is SequenceStatus.WAITING and b.num_preemptions == 1
    assert sched.block_manager.num_free_blocks == 1
    while sched.has_work():
        step(sched)
    assert a.num_output_tokens == 4 and b.num_output_tokens == 4


def test_max_num_seqs_limits_the_batch() -> None:
    sched = make(max_num_seqs=2)
    for i in range(3):
        sched.add(seq(i, [1, 2]))
    assert len(step(sched)) == 2


def test_finish_frees_blocks() -> None:
    sched = make(num_blocks=8)
    a = seq(1, [1, 2, 3, 4, 5])
    sched.add(a)
    step(sched)
    sched.finish(a, "abort")
    assert sched.block_manager.num_free_blocks == 8 and not sched.has_work()


def test_request_arriving_with_a_prefix_being_prefilled_waits_and_then_hits() -> None:
    sched = make(block_size=4)
    prefix = list(range(10, 22))
    a, b = seq(1, prefix + [1], max_tokens=3), seq(2, prefix + [2], max_tokens=3)
    sched.add(a)
    sched.add(b)
    first = step(sched)
    assert [s.seq.seq_id for s in first] == [1]  # b waits for a's prefill
    second = step(sched)
    assert [(s.seq.seq_id, s.num_new_tokens) for s in second] == [(1, 1), (2, 1)]
    assert b.num_cached_tokens == 12


def test_reset_prefix_cache_forgets_prefixes_only_when_idle() -> None:
    sched = make(block_size=4)
    running = seq(1, list(range(10, 22)) + [1], max_tokens=2)
    sched.add(running)
    step(sched)
    assert not sched.block_manager.reset_prefix_cache()
    while sched.has_work():
        step(sched)
    assert sched.block_manager.reset_prefix_cache()
    again = seq(2, list(range(10, 22)) + [1], max_tokens=1)
    sched.add(again)
    step(sched)
    assert again.num_cached_tokens == 0


def test_drafts_take_only_spare_budget_and_blocks_and_never_cost_a_preemption() -> None:
    from model_runtime.engine.speculative import NgramProposer

    pattern = [11, 12, 13, 14, 15, 16]
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=64), BlockManager(7, 4), NgramProposer(num_tokens=6))
    first, second = seq(0, pattern * 2, max_tokens=20), seq(1, [21, 22, 23, 24, 25], max_tokens=20)
    sched.add(first)
    sched.add(second)
    sched.postprocess(sched.schedule(), [11, 7], EOS)  # both prompts (3 + 2 blocks, 2 left); `first` repeats itself
    [a, b] = sched.schedule()
    # `first` grows to 4 blocks; its draft fills them but takes no 5th: that one stays free for `second`
    assert a.seq is first and a.draft == (12, 13, 14) and a.num_new_tokens == a.num_sampled == 4
    assert b.seq is second and b.draft == () and sched.block_manager.num_free_blocks == 1
    sched.postprocess([a, b], [12, 13, 99, 5, 8], EOS)  # two drafts accepted, then the model's 99; `second` writes 8
    assert first.token_ids[-4:] == [11, 12, 13, 99] and first.num_computed_tokens == first.num_tokens - 1
    assert second.token_ids[-1] == 8 and sched.num_preemptions == 0
    assert (sched.num_draft_tokens, sched.num_accepted_draft_tokens) == (3, 2)
    third = Sequence(2, pattern * 2 + [11], SamplingParams(temperature=1.0, max_tokens=20))
    other = Scheduler(SchedulerConfig(), BlockManager(64, 4), NgramProposer(num_tokens=6))
    other.add(third)
    other.postprocess(other.schedule(), [12], EOS)
    assert [s.draft for s in other.schedule()] == [()]  # a sampled request is never drafted for
