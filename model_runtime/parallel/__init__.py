"""Tensor and expert parallelism: a pass over a built model, and the worker processes.

    sharding.py  the pass (`shard_model`, `attach_collectives`, `load_model_shard`) and
                 the collectives (`Communicator`, over a process group of its own)
    workers.py   rank 0's `TensorParallelGroup` and `DriverRunner`; the worker process

`LLM(path, tensor_parallel_size=N)` runs the model on N ranks: the calling process is
rank 0 and starts N-1 worker processes. Every rank builds the whole model on the meta
device, `shard_model` narrows it to the rank's part, the loader reads only that part
from disk (safetensors slices, only the rank's experts), and `attach_collectives` adds
the collectives as forward hooks (as gpt-fast does): the model file never learns it is
sharded. What rank r of N holds:

    attention      q_proj / q_b_proj and kv_b_proj: its H/N heads' rows (column-parallel).
                   q_a_proj, kv_a_proj_with_mqa and their norms: whole, so every rank
                   computes the same latent and keeps its own copy of the paged latent
                   cache, written to the slots rank 0's block manager chose. o_proj: its
                   heads' input columns (row-parallel), output all-reduced; bias on rank 0.
    dense MLP,     gate/up: I/N rows; down: I/N columns; output all-reduced.
    shared experts
    routed experts E/N whole experts (expert-parallel; INT4 experts stay packed). The
                   router is replicated, so every rank knows every token's experts and
                   computes the weighted sum over its own; ONE all-reduce per MoE layer
                   combines the ranks' routed and shared-expert partial sums.
    embedding      replicated (a lookup: cheap, and no collective).
    lm_head        V/N vocabulary rows, logits all-gathered; replicated when tied.

Processes. Rank 0 keeps the scheduler, the block manager and the sampler. Commands go
to each worker over its stdin pipe (length-prefixed pickles: init, cache, step,
logits, stop; EOF means rank 0 is gone); replies (joining, loaded, ready, error) come
back on a pipe of its own. Tensors move over torch.distributed process groups made
directly (no global default group): gloo on CPU, NCCL on CUDA, meeting through a
FileStore in a fresh temporary directory (no ports, no shared-memory names). Each step
rank 0 sends the scheduled sequences (their new tokens and block tables) to every
worker, then every rank runs the same `ModelRunner.run`; workers drop their logits.

Shutdown. `close()` sends stop, waits up to 10 s, then kills. A worker that dies
or raises makes rank 0's collective fail; rank 0 turns that into `WorkerError` naming
the rank (and its exception), and kills the other workers. Workers exit on EOF of their
stdin or when their parent process changes (rank 0 killed; the last one out removes the
rendezvous directory). An atexit hook kills workers rank 0 never closed. Workers run
in their own session and ignore SIGINT, so a terminal's Ctrl-C reaches rank 0 only,
which then shuts them down.

Not here yet: several nodes, a vocabulary-split embedding, all-to-all token dispatch
for experts (the all-reduce combine moves N x the bytes an all-to-all would), and
overlap of communication with compute.
"""

from __future__ import annotations

from model_runtime.parallel.sharding import Communicator, attach_collectives, check_parallel_config, load_model_shard, shard_model
from model_runtime.parallel.workers import DriverRunner, TensorParallelGroup

__all__ = ["Communicator", "DriverRunner", "TensorParallelGroup", "attach_collectives", "check_parallel_config", "load_model_shard", "shard_model"]
