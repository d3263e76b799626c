"""The five system specs of the family: LLaDA, LLaDA2.0, LLaDA-V, LLaDA-o, LLaDA2.0-Uni.

Each spec names its layout's files (for `find`'s error), recognises a directory by them, and loads
and saves through its reader in `formats/`. `find` tries the specs in `SYSTEMS` order: the omni
layouts first, because a Uni or LLaDA-V directory also holds a text backbone's files.

A system that sees names its answerer (`answer`, what `omnidlm ask` runs); a system that draws
names its drawing sampler (`draw`, what `omnidlm draw` / `edit` run) and the drawing options it
takes (`draw_options`, flag dests). They live in this package, one module per omni system
(`lladao.py`, `uni.py`, `llada_v.py`), and import their samplers only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from .. import formats
from ..formats import core
from . import llada_v, lladao, uni

CAPABILITIES = frozenset({"text", "see", "draw", "edit", "interleave"})


@dataclass(frozen=True)
class System:
    name: str
    title: str
    capabilities: frozenset
    layout: str  # the files its checkpoints hold, as `find` names them
    detect: Callable[[Path], bool]
    load: Callable  # (path, device=None, dtype=None, **overrides) -> model
    save: Callable  # (model, path, **kw) -> Path
    owns: Callable[[object], bool]  # whether a model object is of this system
    recipes: tuple[str, ...] = ()  # `omnidlm train --recipe` names that train such a model
    sampling: Mapping = field(default_factory=lambda: MappingProxyType({}))  # default sampling settings
    answer: Callable | None = None  # (Loaded, tasks.Question) -> {"text", ...}: answers about an image ("see")
    answers_without_image: bool = False  # whether `answer` also takes a question with no image
    draw: Callable | None = None  # (Loaded, tasks.Drawing) -> tasks.Drawn: draws, and edits ("draw", "edit")
    draw_options: tuple[str, ...] = ()  # the drawing options `draw` takes (flag dests of commands/draw.py)
    shipped: str | None = None  # the model the project ships for it: models/<shipped> (its README says how it was trained)

    def __post_init__(self):
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"system {self.name!r}: unknown capabilities {sorted(unknown)}")
        if ("see" in self.capabilities) != (self.answer is not None):
            raise ValueError(f"system {self.name!r}: an answerer goes with the capability 'see' (and only with it)")
        if ("draw" in self.capabilities) != (self.draw is not None) or (self.draw is None and self.draw_options):
            raise ValueError(f"system {self.name!r}: a drawing sampler goes with the capability 'draw' (and only with it)")

    def refuse(self, capability: str, what: str) -> None:
        """The clear error of a command asking this system for a capability it lacks."""
        if capability not in self.capabilities:
            can = ", ".join(c for c in sorted(CAPABILITIES) if c in self.capabilities)
            raise ValueError(f"{what} is a {self.title} model: it cannot {capability} (it can: {can})")

    def threshold(self) -> float | None:
        """The confidence threshold its answers decode with when a request gives none (the server's and
        `omnidlm chat`'s default, from `sampling`); None: fixed steps per block (policy "fixed")."""
        if self.sampling.get("policy", "threshold") != "threshold":
            return None
        return self.sampling["threshold"]


def _config(directory: Path) -> dict | None:
    """config.json when there is one (an unparsable one is an error naming it)."""
    path = Path(directory) / "config.json"
    return core.read_json(path) if path.is_file() else None


def _text_format(directory: Path) -> str | None:
    """The text layout of `directory` (omnidlm, llada, llada-v, llada2, ...), or None."""
    hf = _config(directory)
    if hf is None:
        return None
    try:
        return formats.detect(hf, formats.TensorSource(directory).keys()).name
    except formats.UnknownFormat:
        return None


def _is_moe_text(directory: Path) -> bool:
    name = _text_format(directory)
    return name in ("llada2", "llada2-fused") or (name == "omnidlm" and bool(_config(directory).get("n_experts")))


def _is_dense_text(directory: Path) -> bool:
    return _text_format(directory) is not None and not _is_moe_text(directory)


def _is_llada_v(directory: Path) -> bool:
    hf = _config(directory)
    return hf is not None and any(k.startswith("mm_") for k in hf)


def _is_uni(directory: Path) -> bool:
    hf = _config(directory)
    return hf is not None and "image_token_offset" in hf


def _is_lladao(directory: Path) -> bool:
    return (Path(directory) / "llm_config.json").is_file()


def _save_text(default_format: str):
    def save(model, path, format: str = default_format, *args, **kw):
        return formats.save(model, path, format, *args, **kw)
    return save


def _load_lladao(path, device=None, dtype=None, **overrides):
    from ..formats.lladao import load_lladao
    return load_lladao(path, device, dtype, **overrides)


def _save_lladao(model, path, **kw):
    from ..formats.lladao import save_lladao
    return save_lladao(model, path, **kw)


def _load_llada_v(path, device=None, dtype=None, **overrides):
    from ..formats.llada_v import load_llada_v
    return load_llada_v(path, device, dtype, **overrides)


def _save_llada_v(model, path, **kw):
    from ..formats.llada_v import save_llada_v
    return save_llada_v(model, path, **kw)


def _load_uni(path, device=None, dtype=None, **overrides):
    from ..formats.uni import load_uni
    if overrides:
        raise ValueError(f"a Uni checkpoint takes no config overrides (got {sorted(overrides)})")
    return load_uni(path, device, dtype)


def _save_uni(model, path, **kw):
    from ..formats.uni import save_uni
    return save_uni(model, path, **kw)


def _backbone(model, moe: bool) -> bool:
    from ..models.backbone import Backbone
    return type(model) is Backbone and model.config.is_moe == moe


def _lladao_model(model, llada_v: bool) -> bool:
    from ..models.lladao import LLaDAO
    if not isinstance(model, LLaDAO):
        return False
    is_v = not model.can_draw and model.config.projector == "mlp2x_gelu"
    return is_v == llada_v


def _uni_model(model) -> bool:
    from ..models.uni import LLaDA2Uni
    return isinstance(model, LLaDA2Uni)


def _settings(**kw) -> Mapping:
    return MappingProxyType(kw)


# default sampling settings: what a system's answerer and drawing sampler use when a knob is not
# given (lladao.py, uni.py, llada_v.py: `omnidlm ask`, `draw`, `edit`), and the threshold the server and
# `omnidlm chat` decode with (`System.threshold`). The text systems' hold only that threshold:
# `omnidlm generate` runs the published samplers with their own defaults (its flags), picked by the
# model's attention layout.
SYSTEMS: dict[str, System] = {s.name: s for s in [
    System("lladao", "LLaDA-o", frozenset({"text", "see", "draw", "edit"}),
           "llm_config.json + ema.safetensors (or its index) [+ vit_config.json, ae.safetensors, ae_params.json]",
           _is_lladao, _load_lladao, _save_lladao, lambda m: _lladao_model(m, llada_v=False),
           ("digits-lladao", "digits-lladao-tiny"),
           _settings(block_length=32, threshold=lladao.THRESHOLD, draw_steps=lladao.DRAW_STEPS, cfg=lladao.CFG),
           answer=lladao.answer, draw=lladao.draw, draw_options=lladao.DRAW_OPTIONS, shipped="lladao-digits"),
    System("uni", "LLaDA2.0-Uni", frozenset({"text", "see", "draw", "edit", "interleave"}),
           "config.json with 'image_token_offset' + model.safetensors + image_tokenizer/ [+ decoder/]",
           _is_uni, _load_uni, _save_uni, _uni_model, ("digits-uni", "digits-uni-tiny", "digits-uni-tune"),
           _settings(block_length=32, policy="threshold", threshold=0.95, cache="exact", decoder="distilled",
                     cfg=uni.CFG),
           answer=uni.answer, answers_without_image=True, draw=uni.draw, draw_options=uni.DRAW_OPTIONS,
           shipped="uni-digits"),
    System("llada-v", "LLaDA-V", frozenset({"text", "see"}),
           "config.json with mm_* fields + model.safetensors (model.vision_tower.*, model.mm_projector.*)",
           _is_llada_v, _load_llada_v, _save_llada_v, lambda m: _lladao_model(m, llada_v=True), (),
           _settings(policy="fixed", threshold=0.9, cache="none", temperature=0.0),  # block, steps: the answer's length
           answer=llada_v.answer),
    System("llada2", "LLaDA2.0", frozenset({"text"}),
           "config.json (model_type llada2_moe, or omnidlm with n_experts) + model.safetensors (or its index)",
           _is_moe_text, formats.load, _save_text("llada2"), lambda m: _backbone(m, moe=True), ("synthetic-moe-tiny",),
           _settings(policy="threshold", threshold=0.95)),  # the published LLaDA2.0 rule
    System("llada", "LLaDA", frozenset({"text"}),
           "config.json (omnidlm, LLaDA's OLMo fields or Llama fields) + model.safetensors (or its index)",
           _is_dense_text, formats.load, _save_text("omnidlm"), lambda m: _backbone(m, moe=False),
           ("synthetic-text", "synthetic-tiny", "chat-sft", "chat-lora"),
           _settings(policy="threshold", threshold=0.9),  # what text-tiny is served and measured at (docs/benchmarks.md)
           shipped="text-tiny"),
]}
