"""The files of a training run under attack and accident: a crafted state.pt is refused and never
run, debris of a killed run is removed, a truncated metrics line does not stop --resume, written
checkpoints follow the umask, and --resume on a finished run neither re-evaluates nor loses its loss."""

import json
import os
import stat
import sys

import pytest
import torch

from omnidlm.cli import main
from omnidlm.train import apply_overrides, recipe, train
from omnidlm.train import checkpoint as C
from omnidlm.train import evaluate as E
from omnidlm.train.trainer import Trainer

FAST = ["max_steps=4", "save_every=2", "log_every=1", "eval_samples=0", "progress=false", "threads=0"]


def tiny_cfg(*extra):
    return apply_overrides(recipe("synthetic-tiny"), FAST + list(extra))


class WritesAFile:
    """Unpickling this runs `open(path, "w").write(...)`: what a crafted state.pt could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').write('ran')",))


def test_a_crafted_state_pt_is_refused_and_never_run(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    train(tiny_cfg(), out, stop_after=2)
    state = C.latest_checkpoint(out) / "state.pt"
    torch.save({"format": C.STATE_FORMAT, "optimizer": WritesAFile(marker), "rng": {}}, state)
    with pytest.raises(ValueError, match=r"refusing .*state\.pt.*not a training state written by omnidlm"):
        Trainer(tiny_cfg(), out, resume=True)
    assert not marker.exists()
    assert main(["train", "--recipe", "synthetic-tiny", "--out", str(out), "--resume", *FAST]) == 2
    assert not marker.exists()


def test_a_state_pt_of_another_program_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(), out, stop_after=2)
    torch.save({"optimizer": {}, "scheduler": {}}, C.latest_checkpoint(out) / "state.pt")  # no tag: not ours
    with pytest.raises(ValueError, match="not a training state written by this version"):
        Trainer(tiny_cfg(), out, resume=True)
    (C.latest_checkpoint(out) / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json is not valid JSON"):
        Trainer(tiny_cfg(), out, resume=True)


def test_debris_of_a_killed_run_is_removed_on_the_next_run(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(), out, stop_after=2)
    debris = [out / "checkpoints" / ".step-00000004.k2j3h4.tmp", out / ".export.abc123", out / ".metrics.jsonl.tmp"]
    debris[0].mkdir()
    (debris[0] / "model.safetensors").write_bytes(b"half")
    debris[1].mkdir()
    debris[2].write_text("{}")
    assert train(tiny_cfg(), out, resume=True)["step"] == 4
    assert not any(p.exists() for p in debris)
    assert [p.name for p in C.checkpoints(out)] == ["step-00000002", "step-00000004"]


def test_a_truncated_last_metrics_line_does_not_stop_resume(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(), out, stop_after=2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"stage": "train", "step": 3, "loss": 4.5, "lo')  # killed while writing
    assert train(tiny_cfg(), out, resume=True)["step"] == 4
    assert [r["step"] for r in C.read_metrics(out)] == [1, 2, 3, 4]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not a JSON record"):
        C.read_metrics(out)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        train(tiny_cfg("max_steps=2"), tmp_path / "run")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path): stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").rglob("*")}
    assert modes and all(mode == (0o750 if (tmp_path / p).is_dir() else 0o640) for p, mode in modes.items()), modes


def test_resume_on_a_finished_run_reads_its_summary_back(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    first = train(tiny_cfg("eval_samples=1"), out)
    assert first["eval"]["samples"] == 1 and first["loss"] is not None

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(E, "synthetic_exact_match", no_evaluation)
    again = train(tiny_cfg("eval_samples=1"), out, resume=True)
    assert again["already_finished"] and again["step"] == 4
    assert again["loss"] == first["loss"] and again["eval"]["exact_match"] == first["eval"]["exact_match"]
    assert main(["train", "--recipe", "synthetic-tiny", "--out", str(out), "--resume", *FAST, "eval_samples=1"]) == 0
    captured = capsys.readouterr()
    assert "already finished" in captured.err and '"loss": null' not in captured.out
    assert json.loads(captured.out.strip().splitlines()[-1])["loss"] == first["loss"]


def test_final_evaluation_shows_progress(capsys):
    import omnidlm

    model, tok = omnidlm.load("models/text-tiny"), None
    from omnidlm.sequence.tokenizer import Tokenizer

    tok = Tokenizer.from_file("models/text-tiny")
    E.synthetic_exact_match(model, tok, n=2, progress=True)
    assert "eval" in capsys.readouterr().err


def test_an_omni_run_directory_loses_the_debris_of_a_killed_save(tmp_path):
    out = tmp_path / "lladao"
    half = tmp_path / ".lladao.x81k2.tmp"  # what atomic_directory leaves beside `out` when killed
    half.mkdir()
    (half / "ema.safetensors").write_bytes(b"half")
    assert C.prepare_run(out) == out and out.is_dir() and not half.exists()
    (out / "ema.safetensors").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match="--force"):
        C.prepare_run(out)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    C.prepare_run(out, force=True)
    assert not (out / "metrics.jsonl").exists()  # a forced run starts its records afresh
