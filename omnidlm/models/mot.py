"""Mixture-of-Transformers backbone (LLaDA-o, REFERENCE.md §3): two experts share one attention.

Every layer holds an understanding expert (the dense block's own parts and names: `attn_norm`,
`attn` with fused qkv and q/k norms, `mlp_norm`, `mlp`) and, when the model generates images, a
generation copy of each under `gen.` (plus a final `norm_gen`). Each token is routed by a boolean
`gen_route` (B, L): VAE-latent tokens take the generation weights, text and ViT tokens the
understanding ones. Queries, keys and values of both experts are scattered back into one sequence
and ONE attention call covers it, so the experts see each other wherever the mask allows.

Without a generation expert the state dict is exactly the dense `Backbone`'s, so a LLaDA / LLaDA-V
language tower loads into it unchanged.

    model = MoTBackbone(cfg, generation=True)          # gen weights copy the und weights
    out = model(inputs_embeds=x, gen_route=r, attention_mask=m, position_ids=p)
    out.hidden                                         # (B, L, D) after the routed final norm
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..nn.layers import Attention, RMSNorm, Rotary, SwiGLU
from ..sequence.masks import as_attention_mask
from .backbone import ModelOutput, init_weights


def routed(x: torch.Tensor, route: torch.Tensor | None, und: Callable, gen: Callable | None) -> torch.Tensor:
    """Apply `und` to tokens where route is False and `gen` where it is True; (B, L, *) -> (B, L, out).

    Each expert runs only on its own tokens (gathered to (N, *)); with no generation token this is
    the dense path, so an understanding-only batch costs what a dense model costs.
    """
    if route is None or gen is None or not route.any():
        return und(x)
    if route.all():
        return gen(x)
    y_und, y_gen = und(x[~route]), gen(x[route])  # (N_und, *), (N_gen, *)
    out = y_und.new_empty(*route.shape, *y_und.shape[1:])  # (B, L, *)
    out[~route] = y_und
    out[route] = y_gen.to(y_und.dtype)
    return out


def _qkv(parts, x_ND: torch.Tensor) -> torch.Tensor:
    """One expert's normed q|k|v heads, q/k norms applied: (*, D) -> (*, H + 2 KV, Dh).

    `parts` is anything holding `attn_norm` and `attn`: the block itself (understanding) or its `gen`.
    """
    a = parts.attn
    qkv = a.qkv(parts.attn_norm(x_ND)).unflatten(-1, (a.n_heads + 2 * a.kv_heads, a.head_dim))
    if a.q_norm is None:
        return qkv
    q, k, v = qkv.split([a.n_heads, a.kv_heads, a.kv_heads], dim=-2)
    return torch.cat([a.q_norm(q), a.k_norm(k), v], dim=-2)


def _ffn(parts, x_ND: torch.Tensor) -> torch.Tensor:
    return parts.mlp(parts.mlp_norm(x_ND))


class Expert(nn.Module):
    """The generation expert's parts of one layer: both norms, attention (qkv, o, q/k norms), MLP."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.bias)


class MoTBlock(Expert):
    """One layer: the understanding expert under the dense block's names, the generation one under `gen`."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, generation: bool):
        super().__init__(cfg, layer_idx)  # the understanding parts, named as in `Backbone.Block`
        self.gen = Expert(cfg, layer_idx) if generation else None
        self.layer_idx = layer_idx
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_size

    def forward(self, x, route, rotary: Rotary, cos, sin, mask=None, kv_cache=None):
        B, L, _ = x.shape
        gen = self.gen
        # 1. per-expert q/k/v projections (and q/k norms), scattered back into one sequence
        qkv = routed(x, route, partial(_qkv, self), partial(_qkv, gen) if gen else None)  # (B, L, H+2KV, Dh)
        q, k, v = qkv.transpose(1, 2).split([self.n_heads, self.kv_heads, self.kv_heads], dim=1)
        q, k = rotary.rotate(q, cos, sin), rotary.rotate(k, cos, sin)  # (B, H, L, Dh)
        if kv_cache is not None:  # the same protocol as `Attention`: cached keys/values, new ones included
            k, v = kv_cache.attend_kv(self.layer_idx, k, v)
        # 2. ONE attention call over the whole sequence: the experts see each other where the mask allows
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.n_heads)
        out = out.transpose(1, 2).reshape(B, L, -1)  # (B, L, H * Dh)
        # 3. per-expert output projection and MLP
        x = x + routed(out, route, self.attn.o_proj, gen.attn.o_proj if gen else None)
        return x + routed(x, route, partial(_ffn, self), partial(_ffn, gen) if gen else None)


class MoTBackbone(nn.Module):
    """Token embedding -> MoT blocks -> routed final norm (`norm` / `norm_gen`) -> untied text head."""

    def __init__(self, cfg: ModelConfig, generation: bool = True):
        super().__init__()
        if cfg.is_moe:
            raise ValueError("MoTBackbone takes a dense ModelConfig (n_experts = 0); got a MoE config")
        self.config, self.generation = cfg, generation
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTBlock(cfg, i, generation) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if generation else None
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg.rotary_dim, cfg.rope_theta)
        self.apply(init_weights)
        self.copy_understanding_to_generation()

    def generation_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if _is_gen(n)}

    def understanding_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if not _is_gen(n)}

    @torch.no_grad()
    def copy_understanding_to_generation(self) -> None:
        """Initialise every generation weight as a copy of its understanding twin (LLaDA-o's init)."""
        state = self.state_dict()
        for name, p in self.generation_parameters().items():
            p.copy_(state[und_name(name)])

    def freeze_understanding(self, frozen: bool = True) -> None:
        """Stop (or restart) training the understanding expert: embeddings, und layers, `norm`, head."""
        for p in self.understanding_parameters().values():
            p.requires_grad_(not frozen)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                gen_route: torch.Tensor | None = None, return_hidden: bool = False,
                compute_logits: bool = True, kv_cache=None) -> ModelOutput:
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        B, L, _ = x.shape
        if gen_route is not None and gen_route.any() and not self.generation:
            raise ValueError("gen_route marks generation tokens but this model has no generation expert")
        if position_ids is None:
            start = kv_cache.next_position if kv_cache is not None else 0
            position_ids = torch.arange(start, start + L, device=x.device)[None].expand(B, -1)
        cos, sin = self.rotary.cos_sin(position_ids)
        mask = as_attention_mask(attention_mask, L)
        for layer in self.layers:
            x = layer(x, gen_route, self.rotary, cos, sin, mask, kv_cache)
        h = routed(x, gen_route, self.norm, self.norm_gen)  # (B, L, D)
        logits = self.head(h).float() if compute_logits else None
        return ModelOutput(logits=logits, hidden=h if return_hidden or not compute_logits else None)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:  # what the engine embeds a multimodal prefix in
        return self.embed.weight.dtype


def _is_gen(name: str) -> bool:
    return ".gen." in name or name.startswith("norm_gen.")


def und_name(gen_name: str) -> str:
    """`layers.3.gen.attn.qkv.weight` -> `layers.3.attn.qkv.weight`; `norm_gen.weight` -> `norm.weight`."""
    return gen_name.replace(".gen.", ".").replace("norm_gen.", "norm.", 1)
