"""The offline demo: a small Kimi-architecture model trained here on the swarm protocol.

Composes swarm, tools and model_runtime (like swarm/cli.py): generated conversations
(trajectories.py) over seeded fixture worlds (tasks.py) with a compact web kit
(web_kit.py), a tokenizer learned from them (vocab.py), training (train.py, model.py,
abilities.py) and the `swarm demo` run (run.py). policy.py is the protocol as a program.
"""
