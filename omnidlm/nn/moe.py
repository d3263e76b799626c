"""Mixture-of-Experts MLP of LLaDA2.0 (docs/published/llada2.md).

Router: sigmoid scores; `expert_bias` is added for *selection only* (auxiliary-loss-free
balancing); group-limited top-k (keep the `topk_group` best of `n_group` groups, a group scored by
the sum of its two best experts); the chosen experts' unbiased scores are normalised over the top-k
and scaled by `routed_scaling_factor`. Shared experts see every token.

Dispatch sorts the (token, expert) pairs by expert and runs one matmul per expert over its
contiguous slice: a loop over experts, never over tokens.

Auxiliary-loss-free load balancing: training forwards add their tokens-per-expert counts to
`MoE.load_accum`; after each optimiser step the trainer calls `update_expert_bias(model, rate)`,
which nudges every router's `expert_bias` against its observed load and resets the counts.

    loss.backward(); optimizer.step()
    stats = update_expert_bias(model, rate=1e-3)   # {"layers.1.mlp": {"max_min_ratio": .., "cv": ..}}
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
        # tokens per expert summed over training forwards since the last bias update (E,)
        self.load_accum: torch.Tensor | None = None

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        x_TD = x_BLD.reshape(-1, x_BLD.shape[-1])
        idx, weights = self.router(x_TD)
        load = torch.bincount(idx.reshape(-1), minlength=self.router.weight.shape[0])
        self.last_expert_load = load
        if self.training:  # a checkpointed layer counts twice; harmless, the update uses fractions
            self.load_accum = load if self.load_accum is None else self.load_accum + load
        y = self.experts(x_TD, idx, weights, load.tolist()).view_as(x_BLD)
        return y + self.shared(x_BLD) if self.shared is not None else y


# --- auxiliary-loss-free load balancing (docs/published/llada2.md) ------------------------------------------


def _moe_layers(model: nn.Module) -> list[tuple[str, MoE]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MoE)]


def _load_stats(counts_E: torch.Tensor) -> dict:
    """Fractions of routed assignments per expert, max/min ratio and coefficient of variation."""
    frac = counts_E.double() / counts_E.sum().clamp_min(1)  # (E,)
    low = frac.min().item()
    return {
        "load": frac.tolist(),
        "max_min_ratio": frac.max().item() / low if low > 0 else float("inf"),
        "cv": (frac.std(unbiased=False) / frac.mean()).item(),
        "assignments": int(counts_E.sum()),  # tokens x experts per token
    }


def expert_load(model: nn.Module) -> dict[str, dict]:
    """Per MoE layer (by module name): load statistics of the counts accumulated since the last
    update, or of the last forward when nothing was accumulated (e.g. in eval mode)."""
    out = {}
    for name, moe in _moe_layers(model):
        counts = moe.load_accum if moe.load_accum is not None else moe.last_expert_load
        if counts is not None:
            out[name] = _load_stats(counts)
    return out


@torch.no_grad()
def update_expert_bias(model: nn.Module, rate: float) -> dict[str, dict]:
    """One balancing step per MoE layer, in place: b <- b - u * (F - Q) / rms(F - Q).

    F is the observed load (fraction of the routed (token, expert) assignments each expert received
    over the training forwards since the last call), Q = 1/E the uniform load, rms the root mean
    square over experts, u = `rate`. docs/published/llada2.md writes `b_i += u (F_i - Q_i) / rms`; with our
    router, which *adds* the bias to the scores for selection, that would make an overloaded
    expert still more likely, so we subtract: an overloaded expert's bias goes down, an
    underloaded one's goes up (DeepSeek-V3's rule, with the step scaled by the error instead of its
    sign). The bias only affects selection, never the combine weights.

    Under torch.distributed the counts are summed over processes first, so every rank applies the
    same update. Layers with no accumulated counts are left alone. The counts are reset.
    Keep `expert_bias` in float32 (`model.to(torch.bfloat16)` casts buffers too): update steps
    of ~1e-3 on biases of order 1 round away in bfloat16.
    Returns per-layer statistics of the load used (`load`, `max_min_ratio`, `cv`, `assignments`).
    """
    stats = {}
    for name, moe in _moe_layers(model):
        counts = moe.load_accum
        if counts is None:
            continue
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = counts.clone()
            torch.distributed.all_reduce(counts)
        bias = moe.router.expert_bias
        frac = counts.float() / counts.sum().clamp_min(1)  # F (E,)
        err = frac - 1.0 / frac.numel()  # F - Q (E,)
        rms = err.square().mean().sqrt().clamp_min(1e-12)
        bias.sub_((rate * err / rms).to(device=bias.device, dtype=bias.dtype))
        moe.load_accum = None
        stats[name] = _load_stats(counts)
    return stats
