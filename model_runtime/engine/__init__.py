"""The serving engine: many requests, one model, shared steps.

Four parts with one job each, as in nano-vllm:

    llm.py         LLM: the user-facing API (generate, async stream) and the loop thread
    llm_engine.py  LLMEngine.step(): schedule, run, advance, emit
    scheduler.py   which sequences run this step and how many tokens each (no torch)
    block_manager  the paged latent cache's blocks and the prefix cache (no torch)
    runner.py      tensors for a step, the model forward, the sampler
    paged_attention.py  MLA's absorbed attention over the paged latent cache
    speculative.py n-gram drafts for greedy requests, checked as extra decode rows (no torch)

On CPU in float32 the runner's model is fused for serving (`fuse_for_inference`: folded
attention projections, stacked experts) and its hottest small operations are C kernels
built on first use (model_runtime/cpu_kernels.py: decode attention, RMSNorm, rotary,
the MoE router and experts, argmax), with the torch paths kept where no C compiler is.

Shape legend: N new tokens in a step, S sequences, H heads, C kv_lora_rank,
R qk_rope_head_dim, L context length, M sampled sequences, V vocabulary.
"""
