"""The registry of systems: one spec per member of the family, asked by every command, the server,
`bench`, `eval` and `demo` instead of `if uni ... elif lladao` chains.

A `System` says how to recognise its checkpoint layout (`detect`), how to load and save it, what it
can do (`capabilities` within "text", "see", "draw", "edit", "interleave"), its training recipes,
its default sampling settings, and what runs each capability: its answerer (`answer`, for "see")
and drawing sampler (`draw` with its `draw_options`, for "draw" and "edit"); the commands dispatch
through these, never on a system's name (docs/architecture.md, "The spine").

    loaded = open("models/lladao-digits")          # Loaded(system, model, tokenizer)
    loaded.system.name, loaded.system.capabilities  # "lladao", {"text", "see", "draw", "edit"}
    model = load("GSAI-ML/LLaDA-8B-Instruct")       # a local directory or a Hugging Face repo id
    find("some/dir")                                # the System, or an error listing every layout looked for
    system_of(model)                                # the System a model object belongs to
    loaded.system.answer(loaded, Question("What digit is shown?", image))   # systems/tasks.py
    loaded.system.draw(loaded, Drawing("a handwritten digit 7", n=4))       # -> Drawn(images, latents)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..formats import core
from .specs import SYSTEMS, System

__all__ = ["System", "SYSTEMS", "Loaded", "find", "system_of", "open", "load", "save"]


@dataclass(frozen=True)
class Loaded:
    """What `open` returns: the system, its model, the tokenizer the checkpoint ships (or None) and
    the local directory it was read from."""

    system: System
    model: object
    tokenizer: object
    directory: Path | None = None


def find(path: str | Path, revision: str | None = None) -> System:
    """The system whose layout `path` (a directory or a Hugging Face repo id) is in."""
    directory = core.resolve(path, revision)
    if not directory.is_dir():
        what = "is a file, not a checkpoint directory" if directory.exists() else "does not exist"
        raise FileNotFoundError(f"no checkpoint: {directory} {what}")
    for system in SYSTEMS.values():
        if system.detect(directory):
            return system
    looked = "; ".join(f"{s.title} ({s.layout})" for s in SYSTEMS.values())
    present = sorted(p.name for p in directory.iterdir())[:12]
    raise FileNotFoundError(f"{directory} is in no known checkpoint layout (it holds {present}); looked for: {looked}")


def system_of(model) -> System:
    """The system a model object belongs to (by its class and config)."""
    for system in SYSTEMS.values():
        if system.owns(model):
            return system
    raise ValueError(f"no system holds a {type(model).__name__}; systems: {sorted(SYSTEMS)}")


def open(path: str | Path, device=None, dtype=None, revision: str | None = None, **overrides) -> Loaded:  # noqa: A001
    """Load the model at `path` with its system and the tokenizer it ships (when it ships none: the
    character tokenizer if it fits the model, else None; a warning says which)."""
    directory = core.resolve(path, revision)
    system = find(directory)
    model = system.load(directory, device=device, dtype=dtype, **overrides)
    text_config = getattr(model.config, "llm", model.config)  # the omni models keep it under .llm
    return Loaded(system, model, core.read_tokenizer(directory, text_config), directory)


def load(path: str | Path, device=None, dtype=None, revision: str | None = None, **overrides):
    """The model at `path`, whatever its layout (text, LLaDA-V, LLaDA-o, Uni)."""
    directory = core.resolve(path, revision)
    return find(directory).load(directory, device=device, dtype=dtype, **overrides)


def save(model, path: str | Path, *args, **kw) -> Path:
    """Write `model` in its system's layout (`format=` picks a text layout for text models)."""
    return system_of(model).save(model, path, *args, **kw)

