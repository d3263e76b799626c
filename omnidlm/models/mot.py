"""Mixture-of-Transformers backbone (LLaDA-o, docs/published/lladao.md): two experts share one attention.

Every layer holds an understanding expert (the dense block's own parts and names: `attn_norm`,
`attn` with fused qkv and q/k norms, `mlp_norm`, `mlp`) and, when the model generates images, a
generation copy of each under `gen.` (plus a final `norm_gen`). Each token is routed by a boolean
`gen_route` (B, L): VAE-latent tokens take the generation weights, text and ViT tokens the
understanding ones. The routing wraps only the projections and norms (`nn.layers.routed`): the
forward is `Backbone.forward` itself, and ONE attention call covers the whole sequence, so the
experts see each other wherever the mask allows.

Without a generation expert the state dict is exactly the dense `Backbone`'s, so a LLaDA / LLaDA-V
language tower loads into it unchanged.

    model = MoTBackbone(cfg, generation=True)          # gen weights copy the und weights
    out = model(inputs_embeds=x, gen_route=r, attention_mask=m, position_ids=p)
    out.hidden                                         # (B, L, D) after the routed final norm (with return_hidden)
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..config import ModelConfig
from ..nn.layers import Attention, RMSNorm, SwiGLU
from .backbone import Backbone, Block


class Expert(nn.Module):
    """The generation expert's parts of one layer: both norms, attention (qkv, o, q/k norms), MLP."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.bias)


class MoTBlock(Block):
    """The dense block (the understanding expert, under its own names) plus its generation twin `gen`."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, generation: bool):
        super().__init__(cfg, layer_idx)
        if generation:
            self.gen = Expert(cfg, layer_idx)


class MoTBackbone(Backbone):
    """`Backbone` whose blocks carry a generation twin, plus the routed final norm `norm_gen`."""

    def __init__(self, cfg: ModelConfig, generation: bool = True):
        if cfg.is_moe:
            raise ValueError("MoTBackbone takes a dense ModelConfig (n_experts = 0); got a MoE config")
        super().__init__(cfg, block=partial(MoTBlock, generation=generation))
        self.generation = generation
        if generation:
            self.norm_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
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


def _is_gen(name: str) -> bool:
    return ".gen." in name or name.startswith("norm_gen.")


def und_name(gen_name: str) -> str:
    """`layers.3.gen.attn.qkv.weight` -> `layers.3.attn.qkv.weight`; `norm_gen.weight` -> `norm.weight`."""
    return gen_name.replace(".gen.", ".").replace("norm_gen.", "norm.", 1)
