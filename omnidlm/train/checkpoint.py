"""Run directories and checkpoints: written atomically, read back for `--resume` and `omnidlm.load`.

    out/
      config.json, model.safetensors, tokenizer.json   the latest exported weights (omnidlm format):
                                                       `omnidlm.load("out")` reads them
      metrics.jsonl                                    one JSON object per logged step / evaluation
      train_config.json                                the TrainConfig of the run
      checkpoints/step-00000200/                       everything `--resume` needs:
        model.safetensors   training weights (LoRA adapters unmerged)
        ema.safetensors     EMA shadows (when enabled)
        state.pt            optimizer and RNG states: tensors and plain values only, read back with
                            `torch.load(weights_only=True)`, so a crafted file cannot run code
        state.json          step, tokens seen, data position, the TrainConfig

A checkpoint directory is written under a temporary name and renamed into place
(`formats.io.atomic_directory`); the exported top-level files are each replaced by a rename, and
only after the checkpoint is complete; old checkpoints are pruned only after that. A save that
fails half way (a full disk) therefore leaves the previous checkpoint and export intact; what a
killed run leaves behind (`.step-*.tmp`, `.export.*`, `.metrics.jsonl.tmp`) is removed by the
next run (`remove_debris`). A truncated last line of `metrics.jsonl` (a run killed while writing
it) is dropped; any other line that does not parse is an error naming the file and line.
"""

from __future__ import annotations

import contextlib
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
from ..formats.io import atomic_directory, remove_stale_temps, write_json

STEP_DIR = re.compile(r"^step-(\d{8})$")
EXPORTED = ("config.json", "model.safetensors", "tokenizer.json")
STATE_FORMAT = "omnidlm-train-state/1"  # the tag of a state.pt this project wrote


def rng_state() -> dict:
    """Every RNG's state as tensors and plain values (what `weights_only` loading accepts)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss_next],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove_debris(out: Path) -> list[Path]:
    """Remove what a run killed while saving leaves in `out`: temporary checkpoint directories,
    half-done exports and metrics rewrites (and, beside `out`, a half-written replacement of it)."""
    out = Path(out).resolve()
    found = [*out.glob(".export.*"), *out.glob(".metrics.jsonl.tmp"), *(out / "checkpoints").glob(".step-*.tmp"),
             *(out / "checkpoints").glob(".step-*.old")]
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return found + remove_stale_temps(out)  # a replacement of `out` itself: the writers' own rule


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
        torch.save({"format": STATE_FORMAT, **state}, tmp / "state.pt")
        write_json(tmp / "state.json", meta)
    for old in checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path) -> dict:
    """The pieces of a checkpoint directory: model, ema (or None), state (optimizer...), meta."""
    path = Path(path)
    meta = _read_meta(path / "state.json")
    state = load_state(path / "state.pt")
    ema = load_file(path / "ema.safetensors") if (path / "ema.safetensors").is_file() else None
    return {"model": load_file(path / "model.safetensors"), "ema": ema, "state": state, "meta": meta}


def load_state(path: Path) -> dict:
    """A state.pt written by `save_checkpoint`; anything else (a pickle that would run code, a file
    of another program or version) is refused with a ValueError naming the file, and never run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: {path} is missing; the checkpoint is incomplete") from None
    except Exception as error:  # weights_only refuses globals it does not know: code, objects
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"--resume: refusing {path}: it is not a training state written by omnidlm "
                         f"(it holds more than tensors and plain values: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"--resume: refusing {path}: it is not a training state written by this version of "
                         f"omnidlm (no {STATE_FORMAT!r} tag)")
    missing = [k for k in ("optimizer", "rng") if k not in state]
    if missing:
        raise ValueError(f"--resume: {path} lacks {missing}")
    return state


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: {path} is missing; the checkpoint is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--resume: {path} is not valid JSON ({error})") from None
    missing = [k for k in ("step", "tokens_seen", "elapsed_s", "config") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"--resume: {path} lacks {missing}")
    return meta


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


def prepare_run(out: str | Path, force: bool = False) -> Path:
    """A run directory for a recipe that replaces it whole when it saves (the omni recipes): debris
    of a killed run removed; a non-empty one refused without `force`; its old metrics dropped."""
    out = Path(out)
    remove_debris(out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass --force to replace it (or choose another --out)")
        (out / "metrics.jsonl").unlink(missing_ok=True)
    elif out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def keeping(out: Path, names: list[str]):
    """Put the named files of `out` back after the block replaced the directory (an atomic save)."""
    kept = {name: (Path(out) / name).read_bytes() for name in names if (Path(out) / name).is_file()}
    yield
    for name, data in kept.items():
        (Path(out) / name).write_bytes(data)


def append_metrics(out: Path, record: dict) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(out: Path) -> list[dict]:
    """The records of `out/metrics.jsonl`; a truncated last line (a run killed mid-write) is dropped."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics: {path} does not exist")
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break  # the unfinished last write of a killed run
            raise ValueError(f"{path}, line {number}: not a JSON record: {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: not a JSON object: {line[:80]!r}")
        records.append(record)
    return records


def truncate_metrics(out: Path, step: int) -> None:
    """Drop records after `step` (logged by a run killed before its next checkpoint), atomically."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = [r for r in read_metrics(out) if r.get("step", 0) <= step]
    tmp = path.with_name(".metrics.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
