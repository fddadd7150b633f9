"""Building blocks of the DeepSeek-V3 / Kimi K2 decoder: MLA, MoE, RoPE, norms, MLPs."""
