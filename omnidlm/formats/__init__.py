"""Checkpoint formats: read and write every published layout of the family, plus our own.

    model = load("path/to/LLaDA-8B-Instruct", device="cuda", dtype=torch.bfloat16)
    save(model, "out/", format="llada2")

| format        | layout                                                                 |
| ------------- | ---------------------------------------------------------------------- |
| omnidlm       | our own names, `config.json` holding a `ModelConfig`                   |
| llada         | LLaDA-8B, OLMo-style names (`model.transformer.blocks.N.q_proj`, ...)  |
| llada-v       | LLaDA-V's Llama-style language tower (`model.layers.N.self_attn...`)   |
| llada2        | LLaDA2.0 MoE, split experts (`mlp.experts.E.gate_proj`)                |
| llada2-fused  | LLaDA2.0 MoE, experts stacked as (E, I, H) tensors                     |

Loading builds the model on the meta device and reads one tensor at a time from the memory-mapped
files, placing it straight on the target device and dtype: host memory beyond the model itself
stays at about one tensor.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import ModelConfig
from ..models.backbone import Backbone
from ..nn.layers import Rotary
from . import rules as R
from .io import TensorSource, atomic_directory, write_json, write_weights
from .llada import LLADA_V_IGNORED, llada_config, llada_config_json, llada_rules, llama_config, llama_config_json, llama_rules
from .llada2 import is_fused, llada2_config, llada2_config_json, llada2_rules

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


@dataclass(frozen=True)
class Format:
    name: str
    rules: Callable[[ModelConfig], list]
    config_fields: Callable[[dict, list], dict]
    config_json: Callable[[ModelConfig], dict]
    dense_only: bool = False
    ignored: tuple[str, ...] = ()


def _native_rules(cfg: ModelConfig) -> list:
    with torch.device("meta"):
        return [R.one(k, k) for k in Backbone(cfg).state_dict()]


def _native_fields(hf: dict, keys) -> dict:
    return {k: v for k, v in hf.items() if k != "model_type"}


FORMATS = {
    f.name: f
    for f in [
        Format("omnidlm", _native_rules, _native_fields, lambda cfg: {"model_type": "omnidlm", **cfg.to_dict()}),
        Format("llada", llada_rules, lambda hf, keys: llada_config(hf), llada_config_json, dense_only=True),
        Format("llada-v", llama_rules, lambda hf, keys: llama_config(hf), llama_config_json, True, LLADA_V_IGNORED),
        Format("llada2", llada2_rules, llada2_config, llada2_config_json),
        Format("llada2-fused", lambda cfg: llada2_rules(cfg, fused=True), llada2_config, llada2_config_json),
    ]
}


def detect(hf: dict, keys: list[str]) -> Format:
    """Which published layout a checkpoint is in, from its config.json and tensor names."""
    model_type = hf.get("model_type")
    if model_type == "omnidlm":
        return FORMATS["omnidlm"]
    if model_type == "llada2_moe":
        return FORMATS["llada2-fused" if is_fused(keys) else "llada2"]
    if "d_model" in hf or any(k.startswith("model.transformer.") for k in keys):
        return FORMATS["llada"]
    if any(".self_attn.q_proj." in k for k in keys):
        return FORMATS["llada-v"]
    raise ValueError(f"unknown checkpoint format (model_type {model_type!r}); known formats: {sorted(FORMATS)}")


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not directory.exists():
        raise FileNotFoundError(f"no checkpoint: {directory} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config: {path} does not exist")
    return json.loads(path.read_text())


def _special_ids_from_tokenizer(directory: Path, fields: dict) -> dict:
    """Fill special ids a config leaves out from the tokens of `tokenizer.json`, if there is one."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return fields
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    wanted = {"mask_id": ("<|mdm_mask|>", "<|mask|>"), "eot_id": ("<|eot_id|>",), "bos_id": ("<|startoftext|>",)}
    for field, tokens in wanted.items():
        found = [tok.token_to_id(t) for t in tokens if tok.token_to_id(t) is not None]
        if fields.get(field) is None and found:
            fields[field] = found[0]
    return fields


def load_config(path: str | Path, **overrides) -> tuple[ModelConfig, Format, TensorSource]:
    directory = Path(path)
    hf = read_config(directory)
    source = TensorSource(directory)
    fmt = detect(hf, source.keys())
    fields = _special_ids_from_tokenizer(directory, fmt.config_fields(hf, source.keys()))
    fields.update(overrides)
    if fields.get("mask_id") is None:
        raise ValueError(f"{directory}/config.json names no mask token id (mask_token_id); pass mask_id=... (--mask-id)")
    return ModelConfig.from_dict(fields), fmt, source


def load(path: str | Path, device=None, dtype: torch.dtype | None = None, **overrides) -> Backbone:
    """Load a checkpoint of any supported format; `overrides` replace config fields (e.g. mask_id)."""
    device = torch.device(device or "cpu")
    cfg, fmt, source = load_config(path, **overrides)
    if device.type != "cpu":
        source.device = str(device)
    with torch.device("meta"):
        model = Backbone(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rules = fmt.rules(cfg)
    missing = [name for rule in rules for name in rule.sources if name not in source]
    if missing:
        raise KeyError(f"checkpoint {path} lacks {len(missing)} tensor(s) the config implies, e.g. {missing[:5]}")
    unused = R.unused_keys(rules, source, fmt.ignored)
    if unused:
        warnings.warn(f"checkpoint {path} has {len(unused)} tensor(s) the model does not use, e.g. {unused[:5]}")

    def convert(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)

    model.load_state_dict(dict(R.read(rules, source, expected, convert)), strict=True, assign=True)
    model.rotary = Rotary(cfg.rotary_dim, cfg.rope_theta).to(device)
    model.source_format = fmt.name
    return model.eval()


def save(model: Backbone, path: str | Path, format: str = "omnidlm", max_shard_bytes: int | None = None,
         overwrite: bool = False, extra_files: list[Path] = ()) -> Path:
    """Write `model` in `format` atomically (temp directory, then rename); copies `extra_files` beside it."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid formats: {sorted(FORMATS)}")
    fmt, cfg = FORMATS[format], model.config
    if fmt.dense_only and cfg.is_moe:
        raise ValueError(f"format {format!r} holds dense models only; this model has {cfg.n_experts} experts")
    tensors = R.write(fmt.rules(cfg), model.state_dict())
    with atomic_directory(path, overwrite) as tmp:
        write_weights(tmp, tensors, max_shard_bytes)
        write_json(tmp / "config.json", fmt.config_json(cfg))
        for extra in extra_files:
            shutil.copy(extra, tmp / Path(extra).name)
    return Path(path)


def convert(src: str | Path, dst: str | Path, format: str, max_shard_bytes: int | None = None,
            overwrite: bool = False, **overrides) -> Path:
    """Re-write a checkpoint in another format, carrying its tokenizer files along; dtypes are kept."""
    model = load(src, **overrides)
    extras = [Path(src) / f for f in TOKENIZER_FILES if (Path(src) / f).is_file()]
    return save(model, dst, format, max_shard_bytes, overwrite, extras)
