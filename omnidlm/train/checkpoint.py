"""Run directories and checkpoints: written atomically, read back for `--resume` and `omnidlm.load`.

    out/
      config.json, model.safetensors, tokenizer.json   the latest exported weights (omnidlm format):
                                                       `omnidlm.load("out")` reads them
      metrics.jsonl                                    one JSON object per logged step / evaluation
      train_config.json                                the TrainConfig of the run
      checkpoints/step-00000200/                       everything `--resume` needs:
        model.safetensors   training weights (LoRA adapters unmerged)
        ema.safetensors     EMA shadows (when enabled)
        state.pt            optimizer, scheduler, RNG states
        state.json          step, tokens seen, data position, the TrainConfig

A checkpoint directory is written under a temporary name and renamed into place
(`formats.io.atomic_directory`); the exported top-level files are each replaced by a rename, and
only after the checkpoint is complete; old checkpoints are pruned only after that. A save that
fails half way (a full disk) therefore leaves the previous checkpoint and export intact.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..formats import save as save_model
from ..formats.io import atomic_directory, write_json

STEP_DIR = re.compile(r"^step-(\d{8})$")
EXPORTED = ("config.json", "model.safetensors", "tokenizer.json")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints of a run directory, oldest first (temporary directories excluded)."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def save_checkpoint(out: Path, step: int, model_state: dict, ema_state: dict | None, state: dict, meta: dict,
                    keep: int = 2) -> Path:
    """Write checkpoint `step` atomically, then prune all but the newest `keep`."""
    target = Path(out) / "checkpoints" / f"step-{step:08d}"
    with atomic_directory(target, overwrite=True) as tmp:
        save_file({k: _plain(v) for k, v in model_state.items()}, tmp / "model.safetensors")
        if ema_state is not None:
            save_file({k: _plain(v) for k, v in ema_state.items()}, tmp / "ema.safetensors")
        torch.save(state, tmp / "state.pt")
        write_json(tmp / "state.json", meta)
    for old in checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path) -> dict:
    """The pieces of a checkpoint directory: model, ema (or None), state (optimizer...), meta."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    ema = load_file(path / "ema.safetensors") if (path / "ema.safetensors").is_file() else None
    state = torch.load(path / "state.pt", weights_only=False)
    return {"model": load_file(path / "model.safetensors"), "ema": ema, "state": state, "meta": meta}


def export(model, out: Path, tokenizer=None) -> None:
    """Make `out` itself an omnidlm checkpoint of `model` (and `tokenizer`, anything with `.save(path)`):
    each file is written aside, then renamed in."""
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as tmp:
        staged = save_model(model, Path(tmp) / "model", format="omnidlm")
        if tokenizer is not None:
            tokenizer.save(staged / "tokenizer.json")
        for name in EXPORTED:
            if (staged / name).is_file():
                os.replace(staged / name, out / name)


def append_metrics(out: Path, record: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(out: Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics: {path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(out: Path, step: int) -> None:
    """Drop records after `step` (logged by a run killed before its next checkpoint), atomically."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = [r for r in read_metrics(out) if r.get("step", 0) <= step]
    tmp = path.with_name(".metrics.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
