"""Tensor-parallel (and, for MoE, expert-parallel) inference across processes, through DTensor.

    torchrun --nproc_per_node 2 -m omnidlm generate --model M --tensor-parallel 2 --prompt-ids 1,2,3 --json

`tensor_parallel(model, mesh)` shards a loaded `Backbone` in place, Megatron style, with
`torch.distributed.tensor.parallel.parallelize_module`:

- attention: the fused qkv projection column-wise by heads (each rank computes H/tp query heads and
  KV/tp key/value heads), the output projection row-wise (one all-reduce per layer);
- the dense SwiGLU (and MoE shared experts): the fused gate|up projection column-wise, down row-wise;
- MoE routed experts (expert parallelism): each rank holds E/tp experts and computes the pairs
  routed to them; one all-reduce sums the experts' outputs. The router stays replicated, so every
  rank routes every token the same way.

The embedding, norms and head stay replicated, so every rank ends a forward with the same logits
and samples the same tokens (greedy sampling gives the tokens of one process; the sums run in
another order, so logits agree to float rounding). Each rank's config holds its local head
counts, so the engine's key/value cache holds only that rank's heads. On GPUs use one process per
GPU (NCCL) within a node: the all-reduces run after every attention and MLP block.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from .layers import Attention, SwiGLU
from .moe import MoE, Experts


def init_mesh(tp: int):
    """Join the torchrun process group and return a 1-D device mesh of `tp` ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp:
        raise ValueError(f"--tensor-parallel {tp} needs {tp} processes (torchrun --nproc_per_node {tp}); "
                         f"this run has WORLD_SIZE={world}")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return init_device_mesh("cuda" if cuda else "cpu", (tp,))


def _interleave_rows(weight: torch.Tensor, sizes: list[int], tp: int) -> torch.Tensor:
    """Rows [a | b | c] (sizes) -> [a_0 b_0 c_0 | a_1 b_1 c_1 | ...]: rank r's chunk holds its share of each."""
    parts = [p.chunk(tp, dim=0) for p in weight.split(sizes, dim=0)]
    return torch.cat([parts[j][r] for r in range(tp) for j in range(len(sizes))], dim=0)


def _interleave_linear(linear: nn.Linear, sizes: list[int], tp: int) -> None:
    with torch.no_grad():
        linear.weight.copy_(_interleave_rows(linear.weight, sizes, tp))
        if linear.bias is not None:
            linear.bias.copy_(_interleave_rows(linear.bias, sizes, tp))


def _check_divisible(cfg, tp: int) -> None:
    fields = {"n_heads": cfg.n_heads, "n_kv_heads": cfg.kv_heads, "intermediate_size": cfg.intermediate_size}
    if cfg.is_moe:
        fields.update(n_experts=cfg.n_experts, moe_intermediate_size=cfg.moe_intermediate_size * max(1, cfg.n_shared_experts))
    bad = {k: v for k, v in fields.items() if v % tp}
    if bad:
        raise ValueError(f"--tensor-parallel {tp} must divide config field(s) {bad}")


def _shard_attention(attn: Attention, mesh, tp: int) -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    d = attn.head_dim
    _interleave_linear(attn.qkv, [attn.n_heads * d, attn.kv_heads * d, attn.kv_heads * d], tp)
    parallelize_module(attn, mesh, {"qkv": ColwiseParallel(), "o_proj": RowwiseParallel()})
    attn.n_heads, attn.kv_heads = attn.n_heads // tp, attn.kv_heads // tp


def _shard_mlp(mlp: SwiGLU, mesh, tp: int) -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    half = mlp.gate_up.out_features // 2
    _interleave_linear(mlp.gate_up, [half, half], tp)
    parallelize_module(mlp, mesh, {"gate_up": ColwiseParallel(), "down": RowwiseParallel()})


class ExpertShard(nn.Module):
    """This rank's experts [lo, hi) of a MoE layer; the other ranks' outputs are added by all-reduce."""

    def __init__(self, experts: Experts, rank: int, tp: int, group):
        super().__init__()
        n = experts.gate.shape[0] // tp
        self.lo, self.hi, self.group = rank * n, (rank + 1) * n, group
        self.local = Experts(n, experts.gate.shape[2], experts.gate.shape[1])
        with torch.no_grad():
            for name in ("gate", "up", "down"):
                getattr(self.local, name).copy_(getattr(experts, name)[self.lo : self.hi])

    def forward(self, x_TD, idx_TK, w_TK, counts: list[int]) -> torch.Tensor:
        T, K = idx_TK.shape
        pair = ((idx_TK >= self.lo) & (idx_TK < self.hi)).reshape(-1).nonzero().squeeze(1)  # (P,) local pairs
        token = pair // K
        y = x_TD.new_zeros(T, x_TD.shape[1])
        if pair.numel():  # no token routed here: this rank adds nothing
            out = self.local(x_TD[token], idx_TK.reshape(-1)[pair, None] - self.lo, w_TK.reshape(-1)[pair, None],
                             counts[self.lo : self.hi])  # (P, D), weighted
            y.index_add_(0, token, out)
        dist.all_reduce(y, group=self.group)
        return y


def tensor_parallel(model: nn.Module, mesh) -> nn.Module:
    """Shard `model` (a Backbone) across `mesh` in place; -> the model, its config in local heads."""
    tp, cfg = mesh.size(), model.config
    _check_divisible(cfg, tp)
    rank, group = mesh.get_local_rank(), mesh.get_group()
    for layer in model.layers:
        _shard_attention(layer.attn, mesh, tp)
        if isinstance(layer.mlp, MoE):
            layer.mlp.experts = ExpertShard(layer.mlp.experts, rank, tp, group)
            if layer.mlp.shared is not None:
                _shard_mlp(layer.mlp.shared, mesh, tp)
        else:
            _shard_mlp(layer.mlp, mesh, tp)
    model.config = cfg.replace(n_heads=cfg.n_heads // tp, n_kv_heads=cfg.kv_heads // tp, head_dim=cfg.head_size)
    model.tensor_parallel = tp
    return model
