"""Process groups and model wrapping: one process, DDP or FSDP2, on CPU (gloo) or GPU (NCCL).

    torchrun --nproc_per_node 2 -m omnidlm train --recipe synthetic-tiny parallel=fsdp

Under torchrun (WORLD_SIZE > 1) a process group is started from the environment; asking for
DDP or FSDP in a single process starts a group of one, so every path runs anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    mode: str  # "none", "ddp" or "fsdp"
    owns_group: bool  # this module started the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.mode != "none":
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on some rank (a barrier too)."""
        if self.mode == "none":
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def all_mean(self, value: float) -> float:
        if self.mode == "none":
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(parallel: str) -> Dist:
    """Start (or join) the process group that `parallel` needs and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    mode = ("ddp" if world > 1 else "none") if parallel == "auto" else parallel
    if world > 1 and mode == "none":
        raise ValueError(f"parallel=none cannot run in {world} processes; use parallel=ddp or parallel=fsdp")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if mode != "none" and not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if world > 1:
            dist.init_process_group(backend, device_id=device if cuda else None)
        else:  # a group of one, so that DDP / FSDP run without torchrun
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    if mode != "none":
        rank, world = dist.get_rank(), dist.get_world_size()
    return Dist(rank, world, local_rank, device, mode, owns)


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """DDP: replicate and all-reduce gradients. FSDP2: shard each layer, then the root."""
    if d.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if d.mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(d.device.type, (d.world,))
        for layer in model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def no_sync(model: nn.Module, d: Dist, sync: bool):
    """Skip the gradient all-reduce on accumulation micro-steps that are not the last."""
    import contextlib

    if d.mode == "ddp" and not sync:
        return model.no_sync()
    if d.mode == "fsdp":
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def state_options(d: Dist, load: bool = False):
    """Full (unsharded) state dicts on the CPU for checkpoints; None in a single process."""
    if d.mode == "none":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=not load)


def model_state(model: nn.Module, d: Dist) -> dict:
    """The full training state dict (a collective under FSDP; empty on ranks other than 0 there)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if d.mode == "fsdp":
        return get_model_state_dict(model, options=state_options(d))
    inner = getattr(model, "module", model)
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def load_model_state(model: nn.Module, state: dict, d: Dist) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    if d.mode == "fsdp":
        set_model_state_dict(model, state, options=state_options(d, load=True))
    else:
        getattr(model, "module", model).load_state_dict(state)


def optimizer_state(model, optimizer, d: Dist) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=state_options(d))


def load_optimizer_state(model, optimizer, state: dict, d: Dist) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=state_options(d, load=True))
