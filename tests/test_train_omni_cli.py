"""`omnidlm train` runs the LLaDA-o recipes too: listing, overrides and their errors."""

import json

from omnidlm.cli import main


def test_omni_recipe_lists_and_overrides(capsys):
    assert main(["train", "--recipe", "digits-lladao", "--list", "--max-steps", "7", "lr=0.01"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["steps"] == 7 and cfg["lr"] == 0.01 and cfg["recipe"] == "digits-lladao"


def test_unknown_recipe_and_field_are_named(capsys):
    assert main(["train", "--recipe", "nope"]) == 2
    assert "digits-lladao" in capsys.readouterr().err
    assert main(["train", "--recipe", "digits-lladao", "bogus=1"]) == 2
    assert "vae_steps" in capsys.readouterr().err


def test_every_recipe_runs_the_trainer_of_its_kind(tmp_path, monkeypatch, capsys):
    """One table (train/cli.py `runners`) sends each recipe's config to its trainer: the text recipes
    to the resumable trainer, LLaDA-o's to train_omni, Uni's to train_uni (here recorded, not run)."""
    import pytest

    from omnidlm.train import cli, omni, trainer, uni
    from omnidlm.train.recipes import RECIPES

    called = []
    monkeypatch.setattr(trainer, "train", lambda cfg, out, **kw: called.append("text") or {"step": 0})
    monkeypatch.setattr(omni, "train_omni", lambda cfg, out, force: called.append("omni") or (None, {}))
    monkeypatch.setattr(uni, "train_uni", lambda cfg, out, force: called.append("uni") or (None, {}))
    for name in RECIPES:
        assert main(["train", "--recipe", name, "--out", str(tmp_path / name)]) == 0, name
    kinds = ["omni" if n in omni.OMNI_RECIPES else "uni" if n in uni.UNI_RECIPES else "text" for n in RECIPES]
    assert called == kinds and set(kinds) == {"text", "omni", "uni"}
    with pytest.raises(ValueError, match="no trainer takes a dict"):
        cli.runner_of({"recipe": "x"})
