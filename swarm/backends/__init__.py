"""Model backends: each implements `swarm.model.ChatModel`."""
