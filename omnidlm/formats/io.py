"""Reading and writing safetensors checkpoints: one file or many with `model.safetensors.index.json`.

Reading is lazy: `TensorSource` keeps the files memory-mapped and hands out one tensor at a time,
so a loader can place each tensor on its device before reading the next one. Writing is atomic: a
whole checkpoint directory is written under a temporary name and renamed into place, so a crash
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def open_safetensors(path: Path, device: str = "cpu"):
    """`safe_open(path)`; an empty, truncated or header-corrupted file is a ValueError naming it."""
    try:
        return safe_open(path, framework="pt", device=device)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (empty, truncated or corrupted): {error}") from None


class TensorSource:
    """Lazy, name-addressed access to the tensors of a checkpoint directory.

    `single` is the one-file name (`model.safetensors`, `ema.safetensors`, `ae.safetensors`) and
    `index` the shard index beside it, if the layout has one; the index wins when both exist.
    """

    def __init__(self, directory: str | Path, device: str = "cpu", single: str = SINGLE, index: str | None = INDEX):
        self.directory = Path(directory)
        self.single, self.index = single, index
        self.file_of = self._index()
        self._handles = {}
        self.device = device

    def _index(self) -> dict[str, str]:
        if self.index and (self.directory / self.index).is_file():
            return self._weight_map(self.directory / self.index)
        single = self.directory / self.single
        if not single.is_file():
            wanted = self.single + (f" nor {self.index}" if self.index else "")
            raise FileNotFoundError(f"no weights in {self.directory}: neither {wanted} exists" if self.index
                                    else f"no weights in {self.directory}: {wanted} does not exist")
        with open_safetensors(single) as f:
            return {key: self.single for key in f.keys()}

    def _weight_map(self, index: Path) -> dict[str, str]:
        """The index's key -> shard map; shards must be existing files inside the directory."""
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{index} is not a shard index (a JSON object with a 'weight_map'): {error}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index}: 'weight_map' must map tensor names to file names")
        root = self.directory.resolve()
        outside = sorted({f for f in weight_map.values()
                          if Path(f).is_absolute() or root not in (root / f).resolve().parents})
        if outside:
            raise ValueError(f"{index} names shard(s) outside the checkpoint directory: {outside}")
        missing = sorted({f for f in weight_map.values() if not (self.directory / f).is_file()})
        if missing:
            raise FileNotFoundError(f"{index} names shard(s) that do not exist: {missing}")
        return weight_map

    def keys(self) -> list[str]:
        return list(self.file_of)

    def __contains__(self, key: str) -> bool:
        return key in self.file_of

    def file(self, key: str) -> Path:
        """The file holding `key` (the directory when no file holds it)."""
        return self.directory / self.file_of[key] if key in self.file_of else self.directory

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(key).get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        if key not in self.file_of:
            raise KeyError(f"tensor {key!r} is missing from the checkpoint in {self.directory}")
        try:
            return self._handle(key).get_tensor(key)
        except SafetensorError as error:
            raise ValueError(f"{self.file(key)}: tensor {key} cannot be read: {error}") from None

    def _handle(self, key: str):
        """The open shard holding `key`; only one shard stays mapped, so its pages can be dropped."""
        name = self.file_of[key]
        if name not in self._handles:
            self._handles = {name: open_safetensors(self.directory / name, self.device)}
        return self._handles[name]


def shard(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split a state dict into consecutive shards of at most `max_shard_bytes` (one tensor may exceed it)."""
    shards, current, size = [], {}, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def write_weights(directory: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None,
                  stem: str = "model") -> None:
    """Write tensors as one `{stem}.safetensors`, or as shards plus `{stem}.safetensors.index.json`."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    shards = shard(tensors, max_shard_bytes) if max_shard_bytes else [tensors]
    if len(shards) == 1:
        save_file(shards[0], directory / f"{stem}.safetensors", metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, directory / name, metadata={"format": "pt"})
        weight_map.update({key: name for key in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))


def atomic_file(path: str | Path, write) -> None:
    """`write(tmp)` a temporary file beside `path` (same suffix), then rename it into place: a crash
    never leaves a half-written `path`, and the temporary file never stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}"))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: dict) -> None:
    """`data` as indented JSON (values JSON does not know as their str), written whole or not at all."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_file(path, lambda tmp: Path(tmp).write_text(text))


def follow_umask(root: Path) -> None:
    """Give `root` and everything under it the modes the umask gives new files: mkdtemp makes 0700
    directories and safetensors writes 0600 files, which a checkpoint should not keep."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


# a checkpoint directory's own files: replaced (or, if the new checkpoint lacks them, set aside) by an
# overwrite; every other file in the destination (README.md, notes, plots) is left as it is
CHECKPOINT_FILES = re.compile(
    r"(config|llm_config|vit_config|ae_config|ae_params|tokenizer|tokenizer_config|special_tokens_map"
    r"|generation_config)\.json|(model|ema)(-\d+-of-\d+)?\.safetensors|(model|ema)\.safetensors\.index\.json"
    r"|ae\.safetensors|image_tokenizer|decoder|decoder_distilled")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove `.{name}.<pid>.<random>.tmp|.old` siblings of `target` that a killed writer left behind
    (those of a live process are kept); returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)\.)?\w+\.(?:tmp|old)|\.{re.escape(target.name)}\.old")
    removed = []
    for path in target.parent.glob(f".{target.name}.*") if target.parent.is_dir() else []:
        m = pattern.fullmatch(path.name)
        if m and not (m.group(1) and int(m.group(1)) != os.getpid() and _alive(int(m.group(1)))):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
    return removed


def _replace_entries(tmp: Path, target: Path) -> None:
    """Move `tmp`'s entries into the existing `target`, setting aside the checkpoint files they replace
    or that the new checkpoint lacks; other files of `target` stay."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".old", dir=target.parent))
    new = {p.name for p in tmp.iterdir()}
    for path in list(target.iterdir()):
        if path.name in new or CHECKPOINT_FILES.fullmatch(path.name):
            os.replace(path, aside / path.name)
    for name in sorted(new):
        os.replace(tmp / name, target / name)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False):
    """Yield a temporary directory beside `target`; on success it becomes `target` in one rename, or,
    when `target` exists and `overwrite` is set, its entries replace `target`'s checkpoint files only."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--force) to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a checkpoint directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        follow_umask(tmp)
        if target.exists():
            _replace_entries(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
