"""The trainer end to end on a tiny model: run directory, resume, bad resume, a save that fails
half way, gradient accumulation, LoRA fine-tuning on chat data, the CLI and `omnidlm plot`."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import omnidlm
from omnidlm.cli import main
from omnidlm.train import apply_overrides, recipe, train
from omnidlm.train import checkpoint as C
from omnidlm.train.trainer import Trainer

FAST = ["max_steps=6", "save_every=3", "log_every=1", "eval_samples=0", "progress=false", "threads=0"]


def tiny_cfg(*extra):
    return apply_overrides(recipe("synthetic-tiny"), FAST + list(extra))


def losses(out):
    return [r["loss"] for r in C.read_metrics(out) if "loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary = train(tiny_cfg(), out)
    return out, summary


def test_run_directory_is_loadable_and_has_metrics(uninterrupted):
    out, summary = uninterrupted
    assert summary["step"] == 6 and summary["tokens_per_s"] > 0
    assert [p.name for p in C.checkpoints(out)] == ["step-00000003", "step-00000006"]
    model = omnidlm.load(out)
    assert model.config.attention == "block" and model.config.mask_id == 101
    weights = C.load_checkpoint(C.latest_checkpoint(out))["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert (out / "tokenizer.json").is_file() and len(losses(out)) == 6
    assert all(losses(out)[i] > 0 for i in range(6))


def test_killed_and_resumed_run_gives_identical_losses(uninterrupted, tmp_path):
    out, _ = uninterrupted
    train(tiny_cfg(), tmp_path, stop_after=3)  # as if killed after the checkpoint of step 3
    assert [p.name for p in C.checkpoints(tmp_path)] == ["step-00000003"]
    train(tiny_cfg(), tmp_path, resume=True)
    assert losses(tmp_path) == losses(out)  # bit-identical
    a, b = omnidlm.load(out).state_dict(), omnidlm.load(tmp_path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigkilled_process_resumes_to_identical_losses(tmp_path):
    """A real `omnidlm train` process killed (SIGKILL) after its first checkpoint, then --resume."""
    args = ["--recipe", "synthetic-tiny", "--out", str(tmp_path / "killed"), "--max-steps", "12", *FAST[1:]]
    proc = subprocess.Popen([sys.executable, "-m", "omnidlm", "train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not C.checkpoints(tmp_path / "killed") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert C.checkpoints(tmp_path / "killed"), "no checkpoint was written before the kill"
    assert main(["train", *args, "--resume"]) == 0
    train(tiny_cfg("max_steps=12"), tmp_path / "whole")
    assert losses(tmp_path / "killed") == pytest.approx(losses(tmp_path / "whole"), abs=1e-5)


def test_metrics_logged_after_the_last_checkpoint_are_dropped_on_resume(tmp_path):
    train(tiny_cfg(), tmp_path, stop_after=3)
    C.append_metrics(tmp_path, {"step": 4, "loss": 123.0})  # logged by a run killed before step 6's save
    train(tiny_cfg(), tmp_path, resume=True)
    assert 123.0 not in losses(tmp_path) and len(losses(tmp_path)) == 6


def test_resume_with_another_config_names_the_field(tmp_path):
    train(tiny_cfg(), tmp_path, stop_after=3)
    with pytest.raises(ValueError, match=r"differing field\(s\): lr: 0.001 there, 0.002 here"):
        Trainer(tiny_cfg("lr=0.002"), tmp_path, resume=True)
    with pytest.raises(ValueError, match="model.n_layers: 2 there, 3 here"):
        Trainer(tiny_cfg("model.n_layers=3"), tmp_path, resume=True)
    Trainer(tiny_cfg("save_every=5"), tmp_path, resume=True).close()  # execution fields may change


def test_resume_or_restart_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_cfg(), tmp_path / "empty", resume=True)
    train(tiny_cfg(), tmp_path, stop_after=3)
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_cfg(), tmp_path)
    train(tiny_cfg(), tmp_path, stop_after=3, force=True)
    assert len(losses(tmp_path)) == 3


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train(tiny_cfg(), tmp_path, stop_after=3)
    before = omnidlm.load(tmp_path).state_dict()
    real = C.save_file

    def full_disk(tensors, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(C, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_cfg(), tmp_path, resume=True)
    assert [p.name for p in C.checkpoints(tmp_path)] == ["step-00000003"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no debris
    after = omnidlm.load(tmp_path).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    monkeypatch.setattr(C, "save_file", real)
    assert train(tiny_cfg(), tmp_path, resume=True)["step"] == 6  # and the run goes on from there


def test_gradient_accumulation_gives_the_same_losses(uninterrupted, tmp_path):
    out, _ = uninterrupted
    train(tiny_cfg("micro_batch_size=1"), tmp_path)
    assert losses(tmp_path) == pytest.approx(losses(out), abs=1e-5)


def test_ema_and_lora_fine_tuning_on_chat_data_exports_plain_merged_weights(uninterrupted, tmp_path):
    base, _ = uninterrupted
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i} " * 3}]}
            for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = apply_overrides(recipe("chat-lora"), FAST + [f"data_path={data}", f"init_from={base}", "batch_size=4",
                                                       "seq_len=64", "ema_decay=0.5", "lr=0.01"])
    summary = train(cfg, tmp_path / "lora")
    assert summary["step"] == 6
    tuned, original = omnidlm.load(tmp_path / "lora"), omnidlm.load(base)
    assert set(tuned.state_dict()) == set(original.state_dict())  # merged: no adapter keys
    changed = [k for k in original.state_dict() if not torch.equal(tuned.state_dict()[k], original.state_dict()[k])]
    assert changed and all(k.endswith(("qkv.weight", "o_proj.weight", "gate_up.weight", "down.weight")) for k in changed)
    state = C.load_checkpoint(C.latest_checkpoint(tmp_path / "lora"))
    assert any("lora_a" in k for k in state["model"]) and all("lora_" in k for k in state["ema"])


def test_cli_train_then_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--recipe", "synthetic-tiny", "--out", str(out), "--max-steps", "2", "progress=false"])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert main(["plot", str(out)]) == 0 and (out / "loss.png").stat().st_size > 1000
    assert main(["train", "--recipe", "nope", "--out", str(out)]) == 2
    assert "valid recipes" in capsys.readouterr().err
    assert main(["train", "--recipe", "synthetic-tiny", "--out", str(out), "betas=1"]) == 2
    assert "unknown train field 'betas'" in capsys.readouterr().err
    assert main(["train", "--recipe", "synthetic-tiny", "--out", str(out), "--resume", "lr=1"]) == 2
    assert "differing field(s): lr" in capsys.readouterr().err


def _denormals_kept() -> bool:
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() != 0.0  # 1e-40 is a float32 denormal


def test_a_run_puts_back_the_process_wide_cpu_settings(tmp_path):
    threads = torch.get_num_threads()
    assert _denormals_kept()
    train(tiny_cfg("max_steps=2", "threads=1"), tmp_path / "run")
    assert torch.get_num_threads() == threads and _denormals_kept()  # a server in this process sees neither
