"""The published LLaDA-V layout, read and written, as an understanding-only `LLaDAO`.

LLaDA-V directory: `config.json` (Llama-style, `mm_projector_type` mlp2x_gelu, and a `vision_config`
or an `mm_vision_tower` naming SigLIP so400m-patch14-384) and `model.safetensors` (+ index) with the
language tower, `model.vision_tower.vision_tower.vision_model.*` and `model.mm_projector.{0,2}`;
it loads as an understanding-only `LLaDAO` (no generation expert).

    model = load_llada_v("LLaDA-V/")        save_llada_v(model, "out/")
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..models.lladao import LLaDAO, LLaDAOConfig
from ..models.vision import SIGLIP_SO400M
from . import rules as R
from .io import TensorSource, atomic_directory, write_json
from .llada import llama_config, llama_config_json, llama_rules
from .lladao import _build, _finish, _load_rules, _read_json, vit_rules

SIGLIP2_SO400M_384 = {**SIGLIP_SO400M, "image_size": 384}


LLADA_V_TOWER = "model.vision_tower.vision_tower.vision_model."


def llada_v_config(hf: dict, **overrides) -> LLaDAOConfig:
    if hf.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"unsupported LLaDA-V config: field 'mm_projector_type' = {hf['mm_projector_type']!r}"
                         " (only mlp2x_gelu is supported)")
    vision = hf.get("vision_config")
    if vision is None:
        tower = str(hf.get("mm_vision_tower", ""))
        if "so400m-patch14-384" not in tower:
            raise ValueError(f"LLaDA-V config names no 'vision_config' and an unknown 'mm_vision_tower' {tower!r}")
        vision = SIGLIP2_SO400M_384
    llm = ModelConfig.from_dict({**llama_config(hf), **overrides})
    # LLaVA style: features of the second-to-last layer, before the post layer norm
    return LLaDAOConfig(llm=llm, vit=dict(vision), vae=None, projector="mlp2x_gelu", vit_post_norm=False)


def llada_v_rules(model: LLaDAO, names: list[str]) -> list[R.Rule]:
    rules = [R.Rule("language_model." + r.internal, r.sources, r.kind, r.split) for r in llama_rules(model.config.llm)]
    rules += vit_rules(names, LLADA_V_TOWER, False, 3, 0)
    return rules + [R.one(f"mm_projector.layers.{i}.{leaf}", f"model.mm_projector.{i}.{leaf}")
                    for i in (0, 2) for leaf in ("weight", "bias")]


def load_llada_v(path: str | Path, device=None, dtype: torch.dtype | None = None, **overrides) -> LLaDAO:
    """Load LLaDA-V's layout as an understanding-only LLaDAO (no generation expert)."""
    directory, device = Path(path), torch.device(device or "cpu")
    hf = _read_json(directory, "config.json")
    model = _build(llada_v_config(hf, **overrides))
    source = TensorSource(directory)
    # unused by design: the tower's post layer norm, the dropped last layer, anyres' image_newline
    ignored = ("model.image_newline", LLADA_V_TOWER + "post_layernorm.", LLADA_V_TOWER + "head.",
               f"{LLADA_V_TOWER}encoder.layers.{model.vit.encoder.config.num_hidden_layers}.")
    state = _load_rules(model, llada_v_rules(model, list(model.state_dict())), source, path, device, dtype, ignored)
    model = _finish(model, state, device)
    model.source_format = "llada-v"
    return model


def save_llada_v(model: LLaDAO, path: str | Path, overwrite: bool = False) -> Path:
    """Write an understanding-only LLaDAO in LLaDA-V's layout (config.json carries the vision config)."""
    if model.can_draw or model.config.projector != "mlp2x_gelu":
        raise ValueError("the LLaDA-V layout holds understanding-only models with an mlp2x_gelu projector")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors = R.write(llada_v_rules(model, list(state)), state)
    hf = {**llama_config_json(model.config.llm), "mm_projector_type": "mlp2x_gelu", "vision_config": model.config.vit,
          "mm_vision_select_layer": -2}
    with atomic_directory(path, overwrite) as tmp:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        write_json(tmp / "config.json", hf)
    return Path(path)
