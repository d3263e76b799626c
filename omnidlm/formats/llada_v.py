"""The published LLaDA-V layout, read and written, as an understanding-only `LLaDAO`.

A LLaDA-V directory (what the published `save_pretrained` writes):

    config.json          Llama-style language fields + the `mm_*` fields: `mm_projector_type` mlp2x_gelu,
                         `mm_vision_tower` (a directory or a hub name), `image_aspect_ratio`
                         (anyres / anyres_max_N), `image_grid_pinpoints`, `mm_patch_merge_type`
    model.safetensors    (+ index) `model.layers.N.*`, `model.embed_tokens`, `lm_head`,
                         `model.vision_tower.vision_tower.vision_model.*`, `model.mm_projector.{0,2}.*`,
                         `model.image_newline`
    <mm_vision_tower>/config.json   the SigLIP tower's shape (the published builder reads it there)
    tokenizer.json       the mask id comes from its `<|mdm_mask|>` when config.json names none

The vision tower's shape is config.json's `vision_config` when it has one (what `save_llada_v`
writes), else the `mm_vision_tower` directory's config.json, else (a hub name such as
google/siglip2-so400m-patch14-384) SigLIP so400m at 384 px. The published tower drops its last layer
and feeds the raw hidden states of the one before (`mm_vision_select_layer` -2) to the projector.
The image settings travel in `config.extra` and are read by `models/anyres.py`.

    model = load_llada_v("LLaDA-V/")        save_llada_v(model, "out/")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..models.lladao import LLaDAO, LLaDAOConfig
from ..models.vision import SIGLIP_SO400M
from . import core
from . import rules as R
from .io import TensorSource, atomic_directory, write_json
from .llada import llama_config, llama_config_json, llama_rules
from .lladao import vit_rules

SIGLIP2_SO400M_384 = {**SIGLIP_SO400M, "image_size": 384}
LLADA_V_TOWER = "model.vision_tower.vision_tower.vision_model."
LLADA_8B_MASK_ID = 126336  # the published code's default `mask_id`
MASK_TOKENS = ("<|mdm_mask|>", "<|mask|>")
# config.json fields the image processing reads (models/anyres.py), kept as they are
IMAGE_FIELDS = ("image_aspect_ratio", "image_grid_pinpoints", "mm_patch_merge_type", "mm_vision_tower",
                "mm_newline_position")


def tower_config(directory: Path, hf: dict) -> dict:
    """The SigLIP tower's config: `vision_config`, else the `mm_vision_tower` directory's, else so400m-384."""
    if hf.get("vision_config") is not None:
        return dict(hf["vision_config"])
    tower = str(hf.get("mm_vision_tower") or "")
    local = directory / tower / "config.json"
    if tower and local.is_file():
        return json.loads(local.read_text())
    if "so400m-patch14-384" in tower:
        return dict(SIGLIP2_SO400M_384)
    raise ValueError(f"{directory / 'config.json'} names no 'vision_config' and its 'mm_vision_tower' {tower!r} "
                     f"is neither a directory with a config.json ({local}) nor a SigLIP so400m-patch14-384")


def mask_id_of(directory: Path, hf: dict, vocab_size: int) -> int:
    """config.json's `mask_token_id`, else the tokenizer's `<|mdm_mask|>`, else LLaDA-8B's id if it fits."""
    if hf.get("mask_token_id") is not None:
        return int(hf["mask_token_id"])
    found = _token_ids(directory, MASK_TOKENS)
    if found:
        return found[0]
    if LLADA_8B_MASK_ID < vocab_size:
        return LLADA_8B_MASK_ID
    raise ValueError(f"{directory}: config.json has no 'mask_token_id' and no tokenizer.json with "
                     f"{' or '.join(MASK_TOKENS)}; pass mask_id=...")


def _token_ids(directory: Path, tokens) -> list[int]:
    path = directory / "tokenizer.json"
    if not path.is_file():
        return []
    tok = core.read_tokenizer(directory).hf  # a file that does not parse is named
    return [tok.token_to_id(t) for t in tokens if tok.token_to_id(t) is not None]


def llada_v_config(hf: dict, directory: Path | None = None, **overrides) -> LLaDAOConfig:
    """The model config of a LLaDA-V config.json (read from `directory` for the tower and tokenizer)."""
    if hf.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"unsupported LLaDA-V config: field 'mm_projector_type' = {hf['mm_projector_type']!r}"
                         " (only mlp2x_gelu is supported)")
    if hf.get("mm_vision_select_layer", -2) != -2:
        raise ValueError(f"unsupported LLaDA-V config: field 'mm_vision_select_layer' = "
                         f"{hf['mm_vision_select_layer']!r} (only -2, the published setting, is supported)")
    directory = Path(directory) if directory is not None else Path(".")
    fields = llama_config(hf)
    fields["mask_id"] = mask_id_of(directory, hf, fields["vocab_size"])
    if fields.get("eot_id") is None:
        fields["eot_id"] = next(iter(_token_ids(directory, ("<|eot_id|>",))), None)
    llm = ModelConfig.from_dict({**fields, **overrides})
    newline = "unpad" in str(hf.get("mm_patch_merge_type", ""))
    extra = {k: hf[k] for k in IMAGE_FIELDS if k in hf}
    return LLaDAOConfig(llm=llm, vit=tower_config(directory, hf), vae=None, projector="mlp2x_gelu",
                        vit_post_norm=False, image_newline=newline, extra=extra)


def llada_v_rules(model: LLaDAO, names: list[str]) -> list[R.Rule]:
    rules = [R.Rule("language_model." + r.internal, r.sources, r.kind, r.split) for r in llama_rules(model.config.llm)]
    rules += vit_rules(names, LLADA_V_TOWER, False, 3, 0)
    if model.config.image_newline:
        rules.append(R.one("image_newline", "model.image_newline"))
    return rules + [R.one(f"mm_projector.layers.{i}.{leaf}", f"model.mm_projector.{i}.{leaf}")
                    for i in (0, 2) for leaf in ("weight", "bias")]


def load_llada_v(path: str | Path, device=None, dtype: torch.dtype | None = None, **overrides) -> LLaDAO:
    """Load LLaDA-V's layout as an understanding-only LLaDAO (no generation expert)."""
    directory, device = Path(path), torch.device(device or "cpu")
    hf = core.read_json(directory / "config.json")
    model = core.build_meta(lambda: LLaDAO(llada_v_config(hf, directory, **overrides)))
    source = TensorSource(directory)
    # unused by design: the tower's post layer norm and pooling head, and the dropped last layer
    ignored = (LLADA_V_TOWER + "post_layernorm.", LLADA_V_TOWER + "head.",
               f"{LLADA_V_TOWER}encoder.layers.{model.vit.encoder.config.num_hidden_layers}.")
    rules = llada_v_rules(model, list(model.state_dict()))
    state = core.load_state(model, rules, source, device, dtype, ignored, layers_field="num_hidden_layers")
    model = core.finish(model, state, device)
    model.source_format = "llada-v"
    return model


def llada_v_config_json(model: LLaDAO) -> dict:
    cfg = model.config
    return {**llama_config_json(cfg.llm), "model_type": "llava_llada", "architectures": ["LlavaLLaDAModelLM"],
            "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": model.vit.hidden_size, "vision_config": cfg.vit,
            "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", **cfg.extra}


def save_llada_v(model: LLaDAO, path: str | Path, overwrite: bool = False) -> Path:
    """Write an understanding-only LLaDAO in LLaDA-V's layout (config.json carries the vision config)."""
    if model.can_draw or model.config.projector != "mlp2x_gelu":
        raise ValueError("the LLaDA-V layout holds understanding-only models with an mlp2x_gelu projector")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors = R.write(llada_v_rules(model, list(state)), state)
    with atomic_directory(path, overwrite) as tmp:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        write_json(tmp / "config.json", llada_v_config_json(model))
    return Path(path)
