"""The shared training loop (train/loop.py) and what it gives every recipe: the schedule, clipping,
hooks before the EMA, an EMA written into a module, records with their stage, a deadline, expert
balancing of every MoE model through `omnidlm train`, and progress bars."""

import json
import math

import pytest
import torch
from torch import nn

from omnidlm.cli import main
from omnidlm.train import checkpoint as C
from omnidlm.train.loop import Loop, Optim, backprop, param_groups
from omnidlm.train.schedules import make_schedule

FAST = ["save_every=2", "log_every=1", "eval_samples=0", "progress=false", "threads=0"]


def quadratic(dim: int = 3) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(dim, 1)
    return model, torch.randn(8, dim)


def test_learning_rate_follows_the_schedule_and_groups_keep_their_multiplier():
    model, x = quadratic()
    optim = Optim(steps=10, lr=0.1, schedule="cosine", warmup=3, min_lr_ratio=0.1)
    loop = Loop(model, optim, lr_mult=lambda name: 0.5 if name == "bias" else 1.0, progress=False)
    loop.run(backprop(lambda step: {"loss": model(x).pow(2).mean()}))
    expected = make_schedule("cosine", 3, 10, min_ratio=0.1)
    assert [m["lr"] for m in loop.history] == [0.1 * expected(s) for s in range(10)]
    assert {g["lr_mult"]: g["lr"] for g in loop.optimizer.param_groups} == {1.0: 0.1 * expected(9),
                                                                          0.5: 0.1 * expected(9) * 0.5}


def test_param_groups_decay_matrices_only_unless_decay_all():
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    groups = param_groups(model.named_parameters(), Optim(steps=1, lr=1.0, weight_decay=0.1))
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 0.1), (3, 0.0)]
    groups = param_groups(model.named_parameters(), Optim(steps=1, lr=1.0, weight_decay=0.1, decay_all=True))
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(4, 0.1)]


def test_clipping_bounds_the_gradient_and_the_norm_is_always_measured():
    model, x = quadratic()
    loss = backprop(lambda step: {"loss": 1000.0 * model(x).pow(2).mean()})
    unclipped = Loop(model, Optim(steps=1, lr=1.0), progress=False).step_once(loss)["grad_norm"]
    assert unclipped > 1.0
    model, x = quadratic()
    loop = Loop(model, Optim(steps=1, lr=1e-3, betas=(0.9, 0.999), grad_clip=0.5), progress=False)
    assert loop.step_once(loss)["grad_norm"] == pytest.approx(unclipped, rel=1e-5)  # measured before clipping
    # AdamW's first moment after one step is (1 - beta1) * the gradient it was given: the clipped one
    given = [loop.optimizer.state[p]["exp_avg"] / 0.1 for p in model.parameters()]
    assert torch.cat([g.flatten() for g in given]).norm().item() == pytest.approx(0.5, rel=1e-4)


def test_hooks_run_before_the_ema_and_an_ema_can_live_in_a_module():
    model, x = quadratic()
    target = nn.Linear(3, 1)
    target.load_state_dict(model.state_dict())
    seen = []
    loop = Loop(model, Optim(steps=3, lr=0.1, ema_decay=0.5), ema_into=target, progress=False,
                hooks=[lambda loop, m: (model.bias.data.fill_(7.0), seen.append(loop.step))])
    loop.run(backprop(lambda step: {"loss": model(x).pow(2).mean()}))
    assert seen == [0, 1, 2]  # the index of the step the hook follows
    # the EMA saw the hook's bias of 7 after every step: 0.5-weighted average of the start and 7s
    start = float(quadratic()[0].bias.detach())
    assert float(target.bias.detach()) == pytest.approx(start * 0.125 + 7.0 * 0.875)


def test_records_carry_the_stage_and_the_deadline_stops_early(tmp_path):
    model, x = quadratic()
    loop = Loop(model, Optim(steps=50, lr=0.01), "vae", out=tmp_path, log_every=2, progress=False, deadline=0.0)
    summary = loop.run(backprop(lambda step: {"loss": model(x).pow(2).mean(), "mse": model(x).abs().mean()}))
    assert summary["steps"] == 1  # past the deadline after the first step: stop, logged
    record = C.read_metrics(tmp_path)[-1]
    assert record["stage"] == "vae" and record["step"] == 1 and {"loss", "mse", "lr", "grad_norm"} <= set(record)


def test_progress_bar_names_the_stage(capsys):
    model, x = quadratic()
    Loop(model, Optim(steps=2, lr=0.01), "decoder", progress=True).run(
        backprop(lambda step: {"loss": model(x).pow(2).mean()}))
    assert "decoder" in capsys.readouterr().err




def expert_biases(out) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(C.latest_checkpoint(out) / "model.safetensors"))
    return [v for k, v in state.items() if k.endswith("expert_bias")]


def test_omnidlm_train_balances_the_experts_of_a_moe_recipe(tmp_path):
    args = ["train", "--recipe", "synthetic-moe-tiny", "--max-steps", "3"]
    assert main([*args, "--out", str(tmp_path / "moe"), *FAST]) == 0
    biases = expert_biases(tmp_path / "moe")
    assert len(biases) == 1 and biases[0].abs().sum() > 0  # one MoE layer (the first is dense), nudged
    assert float(biases[0].abs().max()) <= 3 * 1e-3 * math.sqrt(4) + 1e-7  # a step moves a bias at most u*sqrt(E)
    assert main([*args, "--out", str(tmp_path / "off"), *FAST, "balance_rate=0"]) == 0
    assert all(float(b.abs().sum()) == 0 for b in expert_biases(tmp_path / "off"))


def test_list_shows_every_recipe(capsys):
    assert main(["train", "--list"]) == 0
    recipes = json.loads(capsys.readouterr().out)["recipes"]
    assert {"synthetic-text", "synthetic-tiny", "synthetic-moe-tiny", "chat-sft", "chat-lora", "digits-lladao", "digits-lladao-tiny",
            "digits-uni", "digits-uni-tiny", "digits-uni-tune"} <= set(recipes)


def listed(capsys, *args) -> dict:
    assert main(["train", "--list", *args]) == 0
    return json.loads(capsys.readouterr().out)["config"]


def test_max_steps_bounds_every_stage_of_the_omni_recipes(capsys):
    cfg = listed(capsys, "--recipe", "digits-lladao", "--max-steps", "7")
    assert (cfg["steps"], cfg["vae_steps"], cfg["vit_pretrain"]["steps"]) == (7, 7, 7)
    cfg = listed(capsys, "--recipe", "digits-uni", "--max-steps", "5")
    assert (cfg["steps"], cfg["tokenizer_steps"]) == (5, 5)
    assert {cfg["decoder_train"][k] for k in ("vae_steps", "steps", "distill_steps")} == {5}
    cfg = listed(capsys, "--recipe", "digits-lladao", "vit_pretrain.steps=11", "kinds=[\"word\"]")
    assert cfg["vit_pretrain"]["steps"] == 11 and cfg["kinds"] == ["word"]
    assert main(["train", "--recipe", "digits-lladao", "--max-steps", "0"]) == 2
    assert "--max-steps" in capsys.readouterr().err


def stage_steps(out) -> dict:
    last = {}
    for r in C.read_metrics(out):
        last[r["stage"]] = max(last.get(r["stage"], 0), r["step"])
    return last


def test_omni_recipe_run_is_bounded_refuses_a_full_out_and_plots(tmp_path, capsys):
    out = tmp_path / "lladao"
    args = ["train", "--recipe", "digits-lladao-tiny", "--out", str(out), "--max-steps", "1",
            'vit_pretrain={"steps": 4, "batch_size": 8}']
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "vae" in err and "vit" in err and "lladao" in err  # a progress bar per stage
    assert stage_steps(out) == {"vae": 1, "vit": 1, "lladao": 1}
    assert (out / "ema.safetensors").is_file()
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # a non-empty --out needs --force
    assert main([*args, "--force"]) == 0 and stage_steps(out) == {"vae": 1, "vit": 1, "lladao": 1}
    assert main(["plot", str(out)]) == 0 and (out / "loss.png").stat().st_size > 1000


def test_uni_recipe_run_is_bounded_in_every_stage(tmp_path):
    out = tmp_path / "uni"
    assert main(["train", "--recipe", "digits-uni-tiny", "--out", str(out), "--max-steps", "1"]) == 0
    assert stage_steps(out) == {"tokenizer": 1, "decoder-vae": 1, "decoder": 1, "distill": 1, "uni": 1}
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["expert_balance"]  # the MoE backbone was balanced by the loop's hook
