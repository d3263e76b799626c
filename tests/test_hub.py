"""Hugging Face repo ids as model paths, resolved through `huggingface_hub` from a cache laid out in
the library's own format in a tmp HF_HOME (models--org--name/snapshots/<hash>/, refs/<revision>),
with HF_HUB_OFFLINE=1: never the network."""

import json
import shutil
from pathlib import Path

import pytest

import omnidlm
from omnidlm import systems
from omnidlm.cli import main
from omnidlm.formats.hub import is_repo_id

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "text-tiny"
MAIN, OLD = "0" * 39 + "1", "0" * 39 + "2"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A cache holding `org/text-tiny` at main, and an `old` revision whose config is another model's."""
    repo = tmp_path / "hf" / "hub" / "models--org--text-tiny"
    for commit in (MAIN, OLD):
        snapshot = repo / "snapshots" / commit
        shutil.copytree(SHIPPED, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "old").write_text(OLD)
    cfg = json.loads((repo / "snapshots" / OLD / "config.json").read_text())
    (repo / "snapshots" / OLD / "config.json").write_text(json.dumps({**cfg, "attention": "full"}))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder named org/
    return repo


def test_repo_id_loads_from_the_cache(hub):
    model = omnidlm.load("org/text-tiny")
    assert model.config.attention == "block"
    loaded = systems.open("org/text-tiny")
    assert loaded.system.name == "llada" and loaded.tokenizer.vocab_size == model.config.vocab_size


def test_revision_picks_the_snapshot(hub):
    assert omnidlm.load("org/text-tiny", revision="old").config.attention == "full"
    assert omnidlm.load("org/text-tiny", revision=OLD).config.attention == "full"


def test_not_in_cache_says_so_offline(hub):
    with pytest.raises(FileNotFoundError, match=r"no model org/absent: .*Hugging Face cache at .*HF_HUB_OFFLINE is set"):
        omnidlm.load("org/absent")


def test_every_command_takes_a_repo_id(hub, capsys):
    code = main(["generate", "--model", "org/text-tiny", "--prompt", "add1    123", "--gen-length", "8", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["output_ids"]
    assert main(["generate", "--model", "org/absent", "--prompt-ids", "1", "--gen-length", "4"]) == 2
    assert "error: no model org/absent" in capsys.readouterr().err


def test_local_paths_win_and_paths_are_not_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(SHIPPED, tmp_path / "org" / "text-tiny")
    assert omnidlm.load("org/text-tiny").config.vocab_size > 0  # the local folder, no hub lookup
    assert is_repo_id("GSAI-ML/LLaDA-8B-Instruct") and not is_repo_id("./models/x") and not is_repo_id("/abs/x")
    assert not is_repo_id("a/b/c") and not is_repo_id("../x")
