"""The DeepSeek-V3 / Kimi K2 decoder: pure PyTorch, no loading, no quantization.

Module names follow the Hugging Face checkpoints (`model.layers.L.self_attn.kv_b_proj`,
`lm_head`, ...) so the loader maps tensors by name; only routed experts differ (stacked
per layer, see layers/moe.py). Quantization is a pass over a built model (quant/).

Two entry points:
- `forward(input_ids [B, T]) -> logits [B, T, V]`: whole sequences, causal, no cache.
- `forward_tokens(input_ids [N], positions [N], attention, logits_indices [M])` for the
  serving engine: N flat tokens of possibly many sequences; `attention` (a
  `LatentAttention`) owns the cache and knows which token belongs to which sequence.
Shapes: B batch, T sequence, N flat tokens, D hidden, V vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from model_runtime.config import ModelConfig
from model_runtime.layers.latent_cache import DenseLatentCache
from model_runtime.layers.mla import LatentAttention, MultiHeadLatentAttention
from model_runtime.layers.mlp import SwiGLU
from model_runtime.layers.moe import MoE
from model_runtime.layers.norm import RMSNorm
from model_runtime.layers.rope import RotaryEmbedding, rotation_tables


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadLatentAttention(config, layer_idx)
        self.mlp: nn.Module = (
            MoE(config) if config.is_moe_layer(layer_idx) else SwiGLU(config.hidden_size, config.intermediate_size)
        )
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor | None, attention: LatentAttention
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention)  # [N, D]
        return x + self.mlp(self.post_attention_layernorm(x))  # [N, D]


class DeepseekV3Backbone(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DeepseekV3Backbone(config)
        self.rotary = RotaryEmbedding(config.rope, config.qk_rope_head_dim)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def fuse_for_inference(self) -> None:
        """Fewer, larger operations per step for serving (layers' `fuse_for_inference`:
        MLA's folded projections, one gate|up matmul, the shared expert stacked with the
        routed ones; on CPU in float32 the C kernels of model_runtime/cpu_kernels.py).
        Call once the weights are final and on their device; the engine's runner does.
        Training never does (the kernels have no backward)."""
        for module in self.modules():
            if module is not self and hasattr(module, "fuse_for_inference"):
                module.fuse_for_inference()

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        batch, seq_len = input_ids.shape
        cache = DenseLatentCache(self.config.num_hidden_layers)
        cache.set_batch(list(range(batch)), [seq_len] * batch)
        positions = torch.arange(seq_len, device=input_ids.device).repeat(batch)  # [B*T]
        logits = self.forward_tokens(input_ids.reshape(-1), positions, cache)  # [B*T, V]
        return logits.view(batch, seq_len, -1)

    @torch.inference_mode()
    def forward_tokens(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        attention: LatentAttention,
        logits_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)  # [N, D]
        cos, sin = self.rotary(positions, x.dtype)  # [N, R/2] each
        cos, sin = rotation_tables(cos, sin, is_interleaved=self.config.rope.is_interleaved)  # or complex [N, R/2], None
        for layer in self.model.layers:
            x = layer(x, cos, sin, attention)  # [N, D]
        if logits_indices is not None:
            x = x[logits_indices]  # [M, D]
        return self.lm_head(self.model.norm(x))  # [M, V]
