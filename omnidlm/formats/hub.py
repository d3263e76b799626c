"""Hugging Face repo ids as model paths: `omnidlm.load("GSAI-ML/LLaDA-8B-Instruct")`, `--model org/name`.

A path that exists locally is used as it is. Otherwise a string shaped like `org/name` is resolved
through `huggingface_hub.snapshot_download`, as `from_pretrained` users expect: the local cache
(`HF_HOME`, `HF_HUB_CACHE`), `HF_HUB_OFFLINE=1` (cache only, never the network), `revision=`.
The environment is read at each call, so a process may change it after importing the hub library.
Without network, a model that is not in the cache is a FileNotFoundError that says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_TRUE = {"1", "on", "yes", "true"}


def is_repo_id(path: str | Path) -> bool:
    """Whether `path` reads as a Hugging Face repo id (`org/name`), not as a filesystem path."""
    text = str(path)
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text and not text.endswith((".json", ".safetensors"))


def cache_dir() -> Path:
    """The hub cache, as `huggingface_hub` finds it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve(path: str | Path, revision: str | None = None) -> Path:
    """A local directory for `path`: itself when it exists, else the hub snapshot of a repo id."""
    local = Path(path).expanduser()
    if local.exists() or not is_repo_id(path):
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), revision=revision, cache_dir=cache_dir(), local_files_only=offline()))
    except Exception as error:  # the hub's errors (not in cache, no network, no such repo) are many classes
        where = f"the Hugging Face cache at {cache_dir()}" + (" (HF_HUB_OFFLINE is set)" if offline() else "")
        rev = f" at revision {revision!r}" if revision else ""
        raise FileNotFoundError(f"no model {path}{rev}: no such local directory, and not in {where} "
                                f"nor downloadable ({type(error).__name__}: {str(error).splitlines()[0]})") from None
