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
    """RMSNorm computed in float32, cast back before the weight (as LLaDA and LLaDA2.0 do)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding on the first `rotary_dim` channels, rotated in float32."""

    def __init__(self, rotary_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rotary_dim = rotary_dim

    def cos_sin(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) positions -> cos, sin of shape (B, 1, L, rotary_dim), float32."""
        freqs = position_ids.float()[..., None] * self.inv_freq  # (B, L, R/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, L, R)
        return emb.cos(), emb.sin()

    def rotate(self, x_BHLD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, rest = x_BHLD[..., : self.rotary_dim].float(), x_BHLD[..., self.rotary_dim :]
        half = self.rotary_dim // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
        out = (rot * cos + rotated * sin).to(x_BHLD.dtype)
        return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out


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
        qkv = routed(x_BLD, route, self.qkv, _twin(twin, "qkv"))
        q, k, v = qkv.view(B, L, self.n_heads + 2 * self.kv_heads, self.head_dim).split(
            [self.n_heads, self.kv_heads, self.kv_heads], dim=2)  # (B, L, heads, D)
        if self.q_norm is not None:
            q = routed(q, route, self.q_norm, _twin(twin, "q_norm"))
            k = routed(k, route, self.k_norm, _twin(twin, "k_norm"))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, L, D)
        q, k = rotary.rotate(q, cos, sin), rotary.rotate(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.attend_kv(self.layer_idx, k, v)  # cached slots, the new ones written in
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask_B1QK, enable_gqa=self.kv_heads != self.n_heads
        )  # (B, H, L, D)
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
