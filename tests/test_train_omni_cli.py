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
