"""The backbone: a pre-norm bidirectional Transformer, dense or Mixture-of-Experts, built from a
`ModelConfig`. It is pure architecture: it maps token ids (or embeddings) to logits and knows
nothing about noise, losses or sampling.

    model = Backbone(preset("llada-tiny"))
    out = model(input_ids)                    # full bidirectional attention
    out = model(input_ids, attention_mask=m)  # m: bool (B, 1, Q, K) or (B, K) key padding
    out.logits                                # (B, L, vocab)
    model(ids, kv_cache=cache, logits_at=idx) # with the engine's cache; logits only at idx (B, K)
    model(inputs_embeds=x, gen_route=r)       # a Mixture-of-Transformers model (models/mot.py)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.layers import Attention, RMSNorm, Rotary, SwiGLU, routed
from ..nn.moe import MoE
from ..sequence.masks import as_attention_mask


@dataclass
class ModelOutput:
    logits: torch.Tensor | None  # (B, L, V); None with compute_logits=False
    hidden: torch.Tensor | None = None  # final normed hidden states (B, L, D), when asked for


class Block(nn.Module):
    """attn_norm -> attention -> mlp_norm -> MLP, pre-norm residual. A Mixture-of-Transformers
    block (models/mot.py) adds a generation twin `gen` of every part; `route` (B, L) picks the
    twin per token, in each projection (`nn.layers.routed`)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.gen = None  # the generation expert's parts (MoT blocks set them)
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        dense = not cfg.is_moe or layer_idx < cfg.first_k_dense
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.bias) if dense else MoE(cfg)

    def forward(self, x, rotary, cos, sin, mask=None, kv_cache=None, route=None):
        g = self.gen
        h = routed(x, route, self.attn_norm, g and g.attn_norm)
        x = x + self.attn(h, rotary, cos, sin, mask, kv_cache, route, g and g.attn)
        h = routed(x, route, self.mlp_norm, g and g.mlp_norm)
        return x + routed(h, route, self.mlp, g and g.mlp)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) projections and embeddings, zero biases (the published models' init)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class Backbone(nn.Module):
    """Token embedding -> blocks -> final RMSNorm -> untied head. `block` builds layer i
    (`Block`, or models/mot.py's two-expert block); `norm_gen` is the generation expert's final norm."""

    def __init__(self, cfg: ModelConfig, block=Block):
        super().__init__()
        self.config = cfg
        self.norm_gen = None  # the generation expert's final norm (MoT models set it)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(block(cfg, i) for i in range(cfg.n_layers))
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
        gen_route: torch.Tensor | None = None,
        compute_logits: bool = True,
    ) -> ModelOutput:
        """`gen_route` (B, L) bool: tokens of the generation expert (MoT models); `logits_at` (B, K):
        only these positions go through the head; `compute_logits` False: no head (hidden returned)."""
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        B, L, _ = x.shape
        route = self._route(gen_route)
        if position_ids is None:
            position_ids = torch.arange(L, device=x.device)[None].expand(B, -1)
        cos, sin = self.rotary.cos_sin(position_ids)
        mask = as_attention_mask(attention_mask, L)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, self.rotary, cos, sin, mask, None, route,
                                                      use_reentrant=False)
            else:
                x = layer(x, self.rotary, cos, sin, mask, kv_cache, route)
        h = routed(x, route, self.norm, self.norm_gen)  # (B, L, D)
        if logits_at is not None:  # (B, K): only these positions go through the head (the sampler's block)
            h = h.gather(1, logits_at[..., None].expand(-1, -1, h.shape[-1]))
        logits = self.head(h).float() if compute_logits else None
        return ModelOutput(logits=logits, hidden=h if return_hidden or not compute_logits else None)

    def _route(self, gen_route: torch.Tensor | None) -> torch.Tensor | None:
        """The route the layers see: None when no token is a generation token (the dense path)."""
        if gen_route is None or not gen_route.any():
            return None
        if self.norm_gen is None:
            raise ValueError("gen_route marks generation tokens but this model has no generation expert")
        return gen_route

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
