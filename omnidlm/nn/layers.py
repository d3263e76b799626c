"""Building blocks of the backbone: RMSNorm, rotary embedding, attention, the SwiGLU MLP and the
two-expert routing of a projection (`routed`).

Attention takes a boolean mask (B, 1, Q, K), True = may attend, or None for full bidirectional
attention, and runs through `scaled_dot_product_attention` on CPU and GPU. A key/value cache, when
given, stores the new keys/values and returns every key/value the queries attend over, the new
ones included (`k, v = kv_cache.attend_kv(layer_idx, k, v)`; see `omnidlm/sampling/cache.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back before the weight (as LLaDA and LLaDA2.0 do).

    `F.rms_norm` runs the published sequence, x * rsqrt(mean(x ** 2) + eps), as one call (the
    same kernels, dispatched from C++), so it gives the same bits (tests/test_backbone.py); in
    float32 it applies the weight too, where the cast back is a no-op.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        normed = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return self.weight * normed.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding on the first `rotary_dim` channels, rotated in float32.

    Applied in the projection's own (B, L, heads, D) layout, so that the queries and keys of one
    fused qkv output rotate in ONE set of kernels (`Attention.forward`). The rotation of the
    published code, out = x * cos + cat(-x2, x1) * sin, is computed as x * cos + cat(x2, x1) *
    sin_signed with sin_signed = cat(-sin1, sin2) made once per forward: (-a) * b and a * (-b) are
    the same float, so the bits do not change and each layer saves a negation.
    """

    def __init__(self, rotary_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rotary_dim = rotary_dim

    def cos_sin(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) positions -> cos, sin_signed of shape (B, L, 1, rotary_dim), float32."""
        freqs = position_ids.float()[..., None] * self.inv_freq  # (B, L, R/2)
        # cos and sin over the whole (B, L, R) as published, not over (B, L, R/2) then repeated:
        # a vectorised kernel may round its scalar tail differently
        emb = torch.cat([freqs, freqs], dim=-1)
        sin = emb.sin()
        half = self.rotary_dim // 2
        return emb.cos()[:, :, None], torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)[:, :, None]

    def rotate(self, x_BLHD: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """Rotate (B, L, heads, D) by the `cos_sin` of its positions -> a new (B, L, heads, D) tensor."""
        R, half = self.rotary_dim, self.rotary_dim // 2
        full = R == x_BLHD.shape[-1]
        rot = (x_BLHD if full else x_BLHD[..., :R]).float()
        out = rot * cos
        out += torch.cat([rot[..., half:], rot[..., :half]], dim=-1) * sin_signed
        out = out.to(x_BLHD.dtype)
        return out if full else torch.cat([out, x_BLHD[..., R:]], dim=-1)


def routed(x: torch.Tensor, route: torch.Tensor | None, und: nn.Module, gen: nn.Module | None) -> torch.Tensor:
    """`und` on the tokens where route is False, `gen` where it is True: (B, L, *) -> (B, L, out).

    The Mixture-of-Transformers routing (LLaDA-o, models/mot.py): each expert runs only on its own
    tokens (gathered to (N, *)); with no route (or no generation twin) this is the dense call.
    """
    if route is None or gen is None:
        return und(x)
    y_und, y_gen = und(x[~route]), gen(x[route])  # (N_und, *), (N_gen, *)
    out = y_und.new_empty(*route.shape, *y_und.shape[1:])  # (B, L, *)
    out[~route] = y_und
    out[route] = y_gen.to(y_und.dtype)
    return out


def _twin(twin: nn.Module | None, name: str) -> nn.Module | None:
    return None if twin is None else getattr(twin, name)


class Attention(nn.Module):
    """Multi-head / grouped-query attention with a fused qkv projection and optional QK RMSNorm.

    With a `route` (B, L) and a `twin` Attention (the generation expert's copy, LLaDA-o), every
    projection and norm runs per token under its expert's weights and ONE attention call covers
    the whole sequence, so the experts see each other wherever the mask allows.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_size
        qkv_out = (self.n_heads + 2 * self.kv_heads) * self.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=cfg.bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x_BLD, rotary: Rotary, cos, sin, mask_B1QK=None, kv_cache=None, route=None, twin=None):
        B, L, _ = x_BLD.shape
        H, KV = self.n_heads, self.kv_heads
        qkv = routed(x_BLD, route, self.qkv, _twin(twin, "qkv")).view(B, L, H + 2 * KV, self.head_dim)
        if self.q_norm is None:  # queries and keys rotate together, as one (B, L, H + KV, D) tensor
            q, k = rotary.rotate(qkv[:, :, : H + KV], cos, sin).split([H, KV], dim=2)
        else:
            q, k = qkv[:, :, :H], qkv[:, :, H : H + KV]
            q = rotary.rotate(routed(q, route, self.q_norm, _twin(twin, "q_norm")), cos, sin)
            k = rotary.rotate(routed(k, route, self.k_norm, _twin(twin, "k_norm")), cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, H + KV :].transpose(1, 2)  # (B, heads, L, D)
        if kv_cache is not None:
            k, v = kv_cache.attend_kv(self.layer_idx, k, v)  # cached slots, the new ones written in
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1QK, enable_gqa=KV != H)  # (B, H, L, D)
        return routed(out.transpose(1, 2).reshape(B, L, -1), route, self.o_proj, _twin(twin, "o_proj"))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up fused in one projection."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
