"""moe-swarm's embedded runtime for Kimi K2 / DeepSeek-V3-architecture MoE models.

A standalone engine: it imports nothing from `swarm`, `tools`, `storage` or `tui`.
"""
