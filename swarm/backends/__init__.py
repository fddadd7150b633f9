"""Model backends behind `swarm.model.ChatModel`, and the retry layer that wraps any of them."""
