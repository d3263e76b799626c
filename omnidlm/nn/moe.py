"""Mixture-of-Experts MLP of LLaDA2.0 (REFERENCE.md §4).

Router: sigmoid scores; `expert_bias` is added for *selection only* (auxiliary-loss-free
balancing); group-limited top-k (keep the `topk_group` best of `n_group` groups, a group scored by
the sum of its two best experts); the chosen experts' unbiased scores are normalised over the top-k
and scaled by `routed_scaling_factor`. Shared experts see every token.

Dispatch sorts the (token, expert) pairs by expert and runs one matmul per expert over its
contiguous slice: a loop over experts, never over tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import SwiGLU


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_experts, cfg.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))
        nn.init.normal_(self.weight, std=0.02)

    def group_limited_topk(self, scores_TE: torch.Tensor) -> torch.Tensor:
        """Indices (T, k) of the top-k experts within the best `topk_group` groups."""
        cfg, T = self.cfg, scores_TE.shape[0]
        if cfg.n_group > 1:
            grouped = scores_TE.view(T, cfg.n_group, -1)  # (T, G, E/G)
            group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # (T, G)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(cfg.topk_group, dim=-1, sorted=False).indices, True)
            keep = keep[:, :, None].expand_as(grouped).reshape(T, -1)  # (T, E)
            scores_TE = scores_TE.masked_fill(~keep, float("-inf"))
        return scores_TE.topk(cfg.n_experts_per_tok, dim=-1).indices

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> expert indices (T, k) and their weights (T, k), float32."""
        logits = F.linear(x_TD.float(), self.weight.float())  # (T, E)
        scores = torch.sigmoid(logits)
        idx = self.group_limited_topk(scores + self.expert_bias.float())
        weights = scores.gather(1, idx)
        if self.cfg.norm_topk_prob and self.cfg.n_experts_per_tok > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return idx, weights * self.cfg.routed_scaling_factor


class Experts(nn.Module):
    """E SwiGLU experts stored stacked: gate/up (E, I, H), down (E, H, I) (the fused layout)."""

    def __init__(self, n_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.gate = nn.Parameter(torch.empty(n_experts, intermediate, hidden))
        self.up = nn.Parameter(torch.empty(n_experts, intermediate, hidden))
        self.down = nn.Parameter(torch.empty(n_experts, hidden, intermediate))
        for w in (self.gate, self.up, self.down):
            nn.init.normal_(w, std=0.02)

    def forward(self, x_TD, idx_TK, w_TK, counts: list[int]) -> torch.Tensor:
        """x (T, D), expert indices and weights (T, K), tokens per expert -> (T, D)."""
        T, K = idx_TK.shape
        order = idx_TK.reshape(-1).argsort(stable=True)  # (T*K,) pairs grouped by expert
        x_sorted = x_TD[order // K]  # (T*K, D) grouped by expert
        outs = []
        for e, chunk in enumerate(x_sorted.split(counts)):
            if chunk.shape[0]:
                h = F.silu(chunk @ self.gate[e].t()) * (chunk @ self.up[e].t())
                outs.append(h @ self.down[e].t())
        y_sorted = torch.cat(outs) if outs else x_sorted.new_zeros(0, x_TD.shape[1])
        y = torch.empty_like(y_sorted)
        y[order] = y_sorted
        return (y.view(T, K, -1).float() * w_TK[..., None]).sum(1).to(x_TD.dtype)


class MoE(nn.Module):
    """Routed experts plus always-on shared experts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.router = Router(cfg)
        self.experts = Experts(cfg.n_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        shared = cfg.moe_intermediate_size * cfg.n_shared_experts
        self.shared = SwiGLU(cfg.hidden_size, shared, cfg.bias) if shared else None
        self.last_expert_load: torch.Tensor | None = None  # tokens per expert, last forward

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        x_TD = x_BLD.reshape(-1, x_BLD.shape[-1])
        idx, weights = self.router(x_TD)
        load = torch.bincount(idx.reshape(-1), minlength=self.router.weight.shape[0])
        self.last_expert_load = load
        y = self.experts(x_TD, idx, weights, load.tolist()).view_as(x_BLD)
        return y + self.shared(x_BLD) if self.shared is not None else y
