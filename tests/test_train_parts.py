"""Training building blocks: schedules, EMA, LoRA merge, recipes and overrides, objective plumbing."""

import dataclasses
import math

import pytest
import torch

from omnidlm.config import ModelConfig
from omnidlm.diffusion import masked as M
from omnidlm.models.backbone import Backbone
from omnidlm.train.data import Rows
from omnidlm.train.ema import EMA
from omnidlm.train.lora import LoRALinear, apply_lora, merge_lora
from omnidlm.train.objectives import micro_batches, trim_bdlm
from omnidlm.train.recipes import RECIPES, apply_overrides, config_differences, recipe
from omnidlm.train.schedules import make_schedule


def tiny(**kw):
    return ModelConfig(vocab_size=40, hidden_size=32, n_layers=2, n_heads=2, intermediate_size=48,
                       mask_id=39, eos_id=38, **kw)


# --- schedules -------------------------------------------------------------------------------------

def test_wsd_schedule_by_hand():
    s = make_schedule("wsd", warmup=2, total=10, decay_frac=0.2, min_ratio=0.0)
    assert [s(i) for i in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]


def test_cosine_schedule_by_hand():
    s = make_schedule("cosine", warmup=1, total=5, min_ratio=0.1)
    assert s(0) == 1.0 and s(1) == 1.0
    assert s(3) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(5) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="valid schedules"):
        make_schedule("linear", 1, 5)


# --- EMA -------------------------------------------------------------------------------------------

def test_ema_update_by_hand():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = EMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((1, 2), 0.9 * 1 + 0.1 * 3))
    with pytest.raises(ValueError, match="decay"):
        EMA(lin, decay=1.0)


# --- LoRA ------------------------------------------------------------------------------------------

def test_lora_starts_at_base_and_merges_exactly():
    torch.manual_seed(0)
    model = Backbone(tiny())
    ids = torch.randint(0, 38, (2, 9))
    base = model(ids).logits
    names = apply_lora(model, rank=4, alpha=8)
    assert len(names) == 8 and all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert torch.equal(model(ids).logits, base)  # B = 0: the adapter starts as the identity
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n in names:
            model.get_submodule(n).lora_b.normal_(std=0.05)
    adapted = model(ids).logits
    assert not torch.allclose(adapted, base, atol=1e-4)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(Backbone(tiny()).state_dict())
    assert torch.allclose(model(ids).logits, adapted, atol=1e-5)


def test_lora_unknown_target_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*qkv"):
        apply_lora(Backbone(tiny()), targets=("q_proj",))


# --- recipes and overrides -------------------------------------------------------------------------

def test_unknown_recipe_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid recipes: .*synthetic-text"):
        recipe("gpt-5")


def test_overrides_parse_by_type_and_reach_the_model():
    cfg = apply_overrides(recipe("synthetic-tiny"), ["lr=0.5", "max_steps=7", "progress=false",
                                                      "model.n_layers=3", "schedule=cosine"])
    assert (cfg.lr, cfg.max_steps, cfg.progress, cfg.model.n_layers, cfg.schedule) == (0.5, 7, False, 3, "cosine")


@pytest.mark.parametrize("item, message", [
    ("learning_rate=1", "unknown train field 'learning_rate'.*valid fields: .*'lr'"),
    ("model.width=3", "unknown model field 'width'.*valid model fields: .*'hidden_size'"),
    ("max_steps=ten", "max_steps='ten': expected a int"),
    ("lr", "not key=value"),
    ("objective=ar", "'objective' must be one of"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(recipe("synthetic-tiny"), [item])


def test_every_recipe_builds():
    for name in RECIPES:
        assert recipe(name).recipe == name


def test_config_differences_name_the_field():
    cfg = recipe("synthetic-tiny")
    saved = cfg.to_dict()
    assert config_differences(saved, dataclasses.replace(cfg, save_every=99)) == []  # execution only
    diffs = config_differences(saved, apply_overrides(cfg, ["lr=0.5", "model.hidden_size=64"]))
    assert diffs == ["lr: 0.001 there, 0.5 here", "model.hidden_size: 32 there, 64 here"]


# --- objectives: trimming and global normalisation ----------------------------------------------------

def _rows(B=4, L=64, prompt=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 38, (B, L), generator=g)
    maskable = torch.zeros(B, L, dtype=torch.bool)
    maskable[:, prompt:] = True
    return Rows(ids, maskable)


def test_trimmed_bdlm_input_gives_the_same_logits_where_loss_is_taken():
    torch.manual_seed(0)
    model = Backbone(tiny(attention="block", block_size=16))
    rows = _rows()
    b = M.bdlm_inputs(rows.input_ids, None, 16, 39, rows.maskable, torch.Generator().manual_seed(1))
    keep, n_noisy = trim_bdlm(b, 16, rows.maskable)
    assert n_noisy == 32 and len(keep) == 32 + 48  # noisy blocks 2-3, clean blocks 0-2
    pos = b.position_ids[None].expand(4, -1)
    full = model(b.input_ids, attention_mask=b.attention_mask[None, None], position_ids=pos).logits
    trimmed = model(b.input_ids[:, keep], attention_mask=b.attention_mask[keep][:, keep][None, None],
                    position_ids=pos[:, keep]).logits
    assert torch.allclose(trimmed[:, :n_noisy], full[:, 64 - n_noisy:64], atol=1e-5)


def _loss_sum(cfg, rows, model, rank, world):
    return sum(m.loss(model(m.input_ids, attention_mask=m.attention_mask, position_ids=m.position_ids).logits)
               for m in micro_batches(cfg, rows, step=3, rank=rank, world=world))


@pytest.mark.parametrize("objective, extra", [("bdlm", {}), ("bdlm", {"reweight": True, "complementary": True}),
                                              ("sft", {}), ("pretrain", {}), ("lladao", {}),
                                              ("sft", {"complementary": True})])
def test_micro_batches_add_up_to_the_global_batch_loss(objective, extra):
    """Accumulating 4 micro-batches, or splitting over 2 'ranks' (x world, averaged), equals one batch."""
    torch.manual_seed(0)
    model = Backbone(tiny(attention="block", block_size=16))
    base = dataclasses.replace(recipe("synthetic-tiny"), model=model.config, objective=objective, **extra)
    rows = _rows()
    whole = _loss_sum(base, rows, model, 0, 1)
    accum = _loss_sum(dataclasses.replace(base, micro_batch_size=1 * (2 if base.complementary else 1)), rows, model, 0, 1)
    assert torch.allclose(accum, whole, atol=1e-5)
    if objective != "lladao":  # lladao's world factor comes from torch.distributed itself
        ranks = (_loss_sum(base, rows, model, 0, 2) + _loss_sum(base, rows, model, 1, 2)) / 2
        assert torch.allclose(ranks, whole, atol=1e-5)


def test_bdlm_micro_loss_is_the_published_loss():
    torch.manual_seed(0)
    model = Backbone(tiny(attention="block", block_size=16))
    cfg = dataclasses.replace(recipe("synthetic-tiny"), model=model.config)
    rows = _rows()
    from omnidlm.train.data import step_seed

    b = M.bdlm_inputs(rows.input_ids, None, 16, 39, rows.maskable, torch.Generator().manual_seed(step_seed(0, 3, 4)))
    pos = b.position_ids[None].expand(4, -1)
    logits = model(b.input_ids, attention_mask=b.attention_mask[None, None], position_ids=pos).logits[:, :64]
    expected = M.bdlm_loss(logits, b.x0, b.is_masked)
    assert torch.allclose(_loss_sum(cfg, rows, model, 0, 1), expected, atol=1e-5)


def test_indivisible_batch_is_an_error():
    cfg = dataclasses.replace(recipe("synthetic-tiny"), micro_batch_size=3)
    with pytest.raises(ValueError, match="micro_batch_size"):
        micro_batches(cfg, _rows(), 0, 0, 1)
    with pytest.raises(ValueError, match="3 processes"):
        micro_batches(recipe("synthetic-tiny"), _rows(), 0, 0, 3)
