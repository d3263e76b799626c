"""Exponential moving average of the trainable weights: shadow <- decay * shadow + (1 - decay) * weight.

    ema = EMA(model, decay=0.995)
    ...optimizer.step(); ema.update(model)
    ema.state_dict()  # {parameter name: shadow}, full tensors (gathered when FSDP shards them)

Works on plain, DDP-wrapped and FSDP2-sharded models: the shadows have the parameters' own type
(a sharded DTensor stays sharded), and names are taken from the unwrapped module. With `into`
(a copy of the model) the shadows are that module's own parameters, so it *is* the EMA model
(the decoder's distillation uses it as its consistency target).
"""

from __future__ import annotations

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 modifies modules in place)."""
    return getattr(model, "module", model)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded DTensor gathered to a plain tensor; a plain tensor as is (a collective for DTensors)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    def __init__(self, model: nn.Module, decay: float, into: nn.Module | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay, self.into = decay, into
        trained = [name for name, p in unwrap(model).named_parameters() if p.requires_grad]
        if into is not None:
            own = dict(into.named_parameters())
            self.shadow = {name: own[name].data for name in trained}
        else:
            params = dict(unwrap(model).named_parameters())
            self.shadow = {name: params[name].detach().clone() for name in trained}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in unwrap(model).named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) shadows on the CPU; every rank must call it under FSDP."""
        return {name: full_tensor(t).detach().cpu() for name, t in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} weight(s), e.g. {missing[:3]}")
        for name, t in self.shadow.items():
            full = state[name].to(device=t.device, dtype=t.dtype)
            if hasattr(t, "full_tensor"):  # a sharded DTensor: take this rank's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full, t.device_mesh, t.placements)
            t.copy_(full)
