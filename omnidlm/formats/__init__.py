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

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import ModelConfig
from ..models.backbone import Backbone
from . import core
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
    layers_field: str = "num_hidden_layers"  # the config.json key of the layer count, for errors
    optional: tuple[str, ...] = ()  # config.json keys whose absence means a default that shapes tensors


def _native_rules(cfg: ModelConfig) -> list:
    return [R.one(k, k) for k in core.build_meta(lambda: Backbone(cfg)).state_dict()]


def _native_fields(hf: dict, keys) -> dict:
    return {k: v for k, v in hf.items() if k not in ("model_type", OVERRIDES)}


OVERRIDES = "omnidlm_overrides"  # config.json key: fields the layout's own keys cannot express
SHAPE_FIELDS = ("vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads", "head_dim", "intermediate_size",
                "partial_rotary_factor", "qk_norm", "qkv_bias", "bias", "n_experts", "n_shared_experts",
                "moe_intermediate_size", "first_k_dense")
LLAMA_OPTIONAL = ("num_key_value_heads", "head_dim", "attention_bias", "mlp_bias")
LLADA2_OPTIONAL = ("num_key_value_heads", "head_dim", "num_experts", "num_shared_experts", "moe_intermediate_size",
                   "first_k_dense_replace", "use_qkv_bias", "use_bias", "partial_rotary_factor")

FORMATS = {
    f.name: f
    for f in [
        Format("omnidlm", _native_rules, _native_fields, lambda cfg: {"model_type": "omnidlm", **cfg.to_dict()},
               layers_field="n_layers", optional=SHAPE_FIELDS),
        Format("llada", llada_rules, lambda hf, keys: llada_config(hf), llada_config_json, dense_only=True,
               layers_field="n_layers", optional=("n_kv_heads", "embedding_size", "include_qkv_bias", "include_bias")),
        Format("llada-v", llama_rules, lambda hf, keys: llama_config(hf), llama_config_json, True, LLADA_V_IGNORED,
               optional=LLAMA_OPTIONAL),
        Format("llada2", llada2_rules, llada2_config, llada2_config_json, optional=LLADA2_OPTIONAL),
        Format("llada2-fused", lambda cfg: llada2_rules(cfg, fused=True), llada2_config, llada2_config_json,
               optional=LLADA2_OPTIONAL),
    ]
}


class UnknownFormat(ValueError):
    """A config.json and tensors in none of the text layouts."""


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
    raise UnknownFormat(f"unknown checkpoint format (model_type {model_type!r}); known formats: {sorted(FORMATS)}")


def read_config(directory: Path) -> dict:
    """`directory/config.json` as a dict; a missing, unparsable or non-object file is named."""
    return core.read_json(Path(directory) / "config.json")


def _special_ids_from_tokenizer(directory: Path, fields: dict) -> dict:
    """Fill special ids a config leaves out from the tokens of `tokenizer.json`, if there is one."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return fields
    tok = core.read_tokenizer(directory).hf
    wanted = {"mask_id": ("<|mdm_mask|>", "<|mask|>"), "eot_id": ("<|eot_id|>",), "bos_id": ("<|startoftext|>",)}
    for field, tokens in wanted.items():
        found = [tok.token_to_id(t) for t in tokens if tok.token_to_id(t) is not None]
        if fields.get(field) is None and found:
            fields[field] = found[0]
    return fields


def _fields(fmt: Format, hf: dict, keys: list[str], path: Path) -> dict:
    """The layout's config fields in our names, plus what it recorded under `omnidlm_overrides`."""
    try:
        fields = fmt.config_fields(hf, keys)
    except KeyError as error:
        raise ValueError(f"{path} lacks the field {error.args[0]!r} ({fmt.name} layout)") from None
    except TypeError as error:
        raise ValueError(f"{path}: a field has the wrong type ({error})") from None
    recorded = hf.get(OVERRIDES, {})
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: field {OVERRIDES!r} must be an object")
    return {**fields, **recorded}


def load_config(path: str | Path, **overrides) -> tuple[ModelConfig, Format, TensorSource]:
    directory = Path(path)
    hf = read_config(directory)
    source = TensorSource(directory)
    fmt = detect(hf, source.keys())
    fields = _special_ids_from_tokenizer(directory, _fields(fmt, hf, source.keys(), directory / "config.json"))
    fields.update(overrides)
    if fields.get("mask_id") is None:
        raise ValueError(f"{directory}/config.json names no mask token id (mask_token_id); pass mask_id=... (--mask-id)")
    try:
        return ModelConfig.from_dict(fields), fmt, source
    except (TypeError, ValueError) as error:
        raise ValueError(f"{directory / 'config.json'}: {error}") from None


def load(path: str | Path, device=None, dtype: torch.dtype | None = None, **overrides) -> Backbone:
    """Load a text checkpoint of any supported format; `overrides` replace config fields (e.g. mask_id)."""
    device = torch.device(device or "cpu")
    cfg, fmt, source = load_config(path, **overrides)
    if device.type != "cpu":
        source.device = str(device)
    model = core.build_meta(lambda: Backbone(cfg))
    try:
        state = core.load_state(model, fmt.rules(cfg), source, device, dtype, fmt.ignored, fmt.layers_field)
    except R.ShapeError as error:
        hf = read_config(Path(path))
        unset = [k for k in fmt.optional if k not in hf and k not in hf.get(OVERRIDES, {})]
        if not unset:
            raise
        raise R.ShapeError(f"{error}; {Path(path) / 'config.json'} does not set the field(s) {unset}, "
                           "so their defaults were used") from None
    model = core.finish(model, state, device)
    model.source_format = fmt.name
    return model


def config_json(fmt: Format, cfg: ModelConfig, keys: list[str]) -> dict:
    """The layout's config.json for `cfg`, plus `omnidlm_overrides`: the fields its keys cannot express
    (e.g. `attention: block` in the llada layout), so a round trip gives the same model and behaviour."""
    hf = fmt.config_json(cfg)
    back = ModelConfig.from_dict(fmt.config_fields(hf, keys))
    recorded = {k: v for k, v in cfg.to_dict().items() if getattr(back, k) != v}
    return {**hf, OVERRIDES: recorded} if recorded else hf


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
        write_json(tmp / "config.json", config_json(fmt, cfg, list(tensors)))
        for extra in extra_files:
            shutil.copy(extra, tmp / Path(extra).name)
    return Path(path)


def convert(src: str | Path, dst: str | Path, format: str, max_shard_bytes: int | None = None,
            overwrite: bool = False, **overrides) -> Path:
    """Re-write a checkpoint in another format, carrying its tokenizer files along; dtypes are kept.
    With `overwrite`, only the destination's checkpoint files are replaced (io.atomic_directory)."""
    src = core.resolve(src)
    if Path(dst).resolve() == src.resolve():
        raise ValueError(f"the destination {dst} is the source checkpoint: write the conversion elsewhere")
    model = load(src, **overrides)
    extras = [Path(src) / f for f in TOKENIZER_FILES if (Path(src) / f).is_file()]
    return save(model, dst, format, max_shard_bytes, overwrite, extras)
