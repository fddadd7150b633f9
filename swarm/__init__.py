"""moe-swarm's agent swarm: a coordinator that splits a task over parallel sub-agents.

Seams are `typing.Protocol`s: `ChatModel` (swarm.model), `Tool` and `ToolKit`
(swarm.tooling), `TraceSink` (swarm.events). `swarm.cli` is the one composition root.
"""
