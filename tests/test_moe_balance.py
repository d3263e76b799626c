"""Auxiliary-loss-free load balancing (`omnidlm/nn/moe.py`): the update against hand computation,
balance reached on a skewed router, and the bias touching selection only."""

import math

import pytest
import torch

from omnidlm.config import ModelConfig, preset
from omnidlm.models.backbone import Backbone
from omnidlm.nn.moe import MoE, expert_load, update_expert_bias


def tiny_moe(n_experts=4, k=1, **kw) -> MoE:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=16, hidden_size=8, n_heads=2, intermediate_size=16, mask_id=15, eos_id=14,
                      n_experts=n_experts, n_experts_per_tok=k, moe_intermediate_size=8, **kw)
    return MoE(cfg)


def test_update_matches_hand_computation():
    moe = tiny_moe()
    moe.load_accum = torch.tensor([5, 1, 1, 1])
    # F = (5, 1, 1, 1) / 8, Q = 1/4, F - Q = (3, -1, -1, -1) / 8, rms = sqrt(12 / 4) / 8 = sqrt(3) / 8
    stats = update_expert_bias(moe, rate=0.1)
    want = torch.tensor([-0.1 * math.sqrt(3), 0.1 / math.sqrt(3), 0.1 / math.sqrt(3), 0.1 / math.sqrt(3)])
    assert torch.allclose(moe.router.expert_bias, want, atol=1e-6)  # overloaded down, underloaded up
    assert stats[""]["max_min_ratio"] == pytest.approx(5.0)
    assert stats[""]["assignments"] == 8
    assert moe.load_accum is None  # reset for the next step


def test_balanced_load_leaves_bias_alone():
    moe = tiny_moe()
    moe.load_accum = torch.tensor([3, 3, 3, 3])
    update_expert_bias(moe, rate=0.1)
    assert torch.equal(moe.router.expert_bias, torch.zeros(4))


def test_training_forwards_accumulate_and_eval_forwards_do_not():
    moe = tiny_moe(k=2)
    x1, x2 = torch.randn(3, 5, 8), torch.randn(2, 4, 8)
    moe.train()
    moe(x1)
    first = moe.last_expert_load.clone()
    moe(x2)
    assert torch.equal(moe.load_accum, first + moe.last_expert_load)
    assert int(moe.load_accum.sum()) == (15 + 8) * 2
    accumulated = moe.load_accum.clone()
    moe.eval()
    with torch.no_grad():
        moe(x1)
    assert torch.equal(moe.load_accum, accumulated)  # an eval forward does not count
    assert expert_load(moe)[""]["assignments"] == 46


def test_skewed_router_becomes_balanced():
    moe = tiny_moe(n_experts=8, k=2, n_group=2, topk_group=1)
    direction = torch.randn(8)
    with torch.no_grad():  # experts 0 and 1 take ~97% of the assignments on this input distribution
        moe.router.weight.normal_(0, 0.5)
        moe.router.weight[:2] += 0.5 * direction
    g = torch.Generator().manual_seed(1)

    def batch(n: int = 512) -> torch.Tensor:
        return (direction + torch.randn(n, 8, generator=g))[None]  # (1, n, D)

    probe = batch(2048)

    def load() -> dict:
        moe.eval()
        with torch.no_grad():
            moe(probe)
        return expert_load(moe)[""]

    before = load()
    moe.train()
    for _ in range(300):
        with torch.no_grad():
            moe(batch())
        update_expert_bias(moe, rate=0.003)
    after = load()
    assert before["max_min_ratio"] > 50 and after["max_min_ratio"] < 3, (before, after)
    assert after["cv"] < before["cv"] / 5


def test_bias_changes_selection_only():
    moe = tiny_moe(n_experts=8, k=3)
    x = torch.randn(40, 8)
    router = moe.router
    scores = torch.sigmoid(x @ router.weight.t())  # (T, E)
    with torch.no_grad():
        router.expert_bias.copy_(torch.randn(8) * 3)
    idx, w = router(x)
    want = scores.gather(1, idx)
    want = want / want.sum(-1, keepdim=True) * router.cfg.routed_scaling_factor
    assert torch.allclose(w, want, atol=1e-6)  # weights from the unbiased scores of the chosen experts
    # with every expert chosen, the bias cannot matter at all
    full = tiny_moe(n_experts=4, k=4)
    y0 = full(x[None])
    with torch.no_grad():
        full.router.expert_bias.copy_(torch.tensor([5.0, -5.0, 2.0, 0.0]))
    assert torch.allclose(full(x[None]), y0, atol=1e-6)


def test_update_walks_a_backbone_and_touches_only_biases():
    model = Backbone(preset("llada2-tiny"))
    params = {k: v.clone() for k, v in model.named_parameters()}
    model.train()
    model(torch.randint(0, 300, (2, 16)))
    stats = update_expert_bias(model, rate=1e-3)
    assert sorted(stats) == ["layers.1.mlp", "layers.2.mlp"]
    assert all(not torch.equal(model.layers[i].mlp.router.expert_bias, torch.zeros(16)) for i in (1, 2))
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert "expert_bias" in "".join(model.state_dict())  # still a checkpointed buffer
    assert not any("load_accum" in k for k in model.state_dict())
