"""The backbone: a pre-norm bidirectional Transformer, dense or Mixture-of-Experts, built from a
`ModelConfig`. It is pure architecture: it maps token ids (or embeddings) to logits and knows
nothing about noise, losses or sampling.

    model = Backbone(preset("llada-tiny"))
    out = model(input_ids)                    # full bidirectional attention
    out = model(input_ids, attention_mask=m)  # m: bool (B, 1, Q, K) or (B, K) key padding
    out.logits                                # (B, L, vocab)
    model(ids, kv_cache=cache, logits_at=idx) # with the engine's cache; logits only at idx (B, K)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.layers import RMSNorm, Rotary, Attention, SwiGLU
from ..nn.moe import MoE
from ..sequence.masks import as_attention_mask


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, L, V)
    hidden: torch.Tensor | None = None  # final normed hidden states (B, L, D), when asked for


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        dense = not cfg.is_moe or layer_idx < cfg.first_k_dense
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.bias) if dense else MoE(cfg)

    def forward(self, x, rotary, cos, sin, mask=None, kv_cache=None):
        x = x + self.attn(self.attn_norm(x), rotary, cos, sin, mask, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) projections and embeddings, zero biases (the published models' init)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Backbone(nn.Module):
    """Token embedding -> blocks -> final RMSNorm -> untied head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg.rotary_dim, cfg.rope_theta)
        self.gradient_checkpointing = False
        self.apply(init_weights)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        kv_cache=None,
        return_hidden: bool = False,
        logits_at: torch.Tensor | None = None,
    ) -> ModelOutput:
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        B, L, _ = x.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=x.device)[None].expand(B, -1)
        cos, sin = self.rotary.cos_sin(position_ids)
        mask = as_attention_mask(attention_mask, L)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, self.rotary, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, self.rotary, cos, sin, mask, kv_cache)
        h = self.norm(x)
        if logits_at is not None:  # (B, K): only these positions go through the head (the sampler's block)
            h = h.gather(1, logits_at[..., None].expand(-1, -1, h.shape[-1]))
        return ModelOutput(logits=self.head(h).float(), hidden=h if return_hidden else None)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
