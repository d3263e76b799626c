"""LoRA: low-rank adapters on the backbone's linear layers, merged into plain weights on export.

    apply_lora(model, rank=8, alpha=16, targets=("qkv", "o_proj", "gate_up", "down"))
    ...train: only the adapters (lora_a, lora_b) require grad...
    merge_lora(model)   # back to plain nn.Linear with W + (alpha / rank) * B @ A

A LoRALinear computes base(x) + scale * (x @ A^T) @ B^T with A (rank, in) random and B (out, rank)
zero, so an adapted model starts exactly equal to its base (Hu et al., 2021). Its state-dict keys
are `<name>.base.weight`, `<name>.lora_a`, `<name>.lora_b`; after merging they are the base
model's `<name>.weight` again, so the result saves and loads as an ordinary checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("qkv", "o_proj", "gate_up", "down")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"lora rank must be positive, got {rank}")
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **factory))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def delta(self) -> torch.Tensor:
        """The weight update scale * B @ A, (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear holding W + scale * B @ A."""
        b = self.base
        out = nn.Linear(b.in_features, b.out_features, bias=b.bias is not None, device=b.weight.device, dtype=b.weight.dtype)
        out.weight.copy_(b.weight + self.delta().to(b.weight.dtype))
        if b.bias is not None:
            out.bias.copy_(b.bias)
        return out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS) -> list[str]:
    """Freeze every weight and wrap the nn.Linear layers whose last name is in `targets`.

    Returns the wrapped module names; an empty match is an error naming the valid linear names.
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = [name for name in linears if name.rpartition(".")[2] in set(targets)]
    if not chosen:
        valid = sorted({name.rpartition(".")[2] for name in linears})
        raise ValueError(f"lora targets {list(targets)} match no linear layer; valid names: {valid}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        _replace(model, name, LoRALinear(linears[name], rank, alpha))
    return chosen


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged nn.Linear (in place); returns the model."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            _replace(model, name, m.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())
