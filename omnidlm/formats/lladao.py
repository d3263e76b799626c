"""The published LLaDA-o layout, read and written (LLaDA-V's lives in `formats/llada_v.py`).

LLaDA-o directory:

    llm_config.json    Llama-style language config (+ qk_norm, layer_module)
    vit_config.json    SigLIP config of the full tower (the model drops its last layer)
    ae.safetensors     the VAE in the original (FLUX / LDM) names: encoder.down.0.block.0.conv1, ...
    ema.safetensors    everything else, or shards ema-0000i-of-0000n.safetensors + ema.safetensors.index.json:
                       language_model.model.layers.N.self_attn.q_proj[_moe_gen], q_norm[_moe_gen], ...
                       vit_model.vision_model.* (patch embedding stored as a Linear over (p, p, C)),
                       connector.fc1/fc2, vit_pos_embed, vae2llm, llm2vae, time_embedder, latent_pos_embed
    ae_params.json     optional: the VAE's published `AutoEncoderParams` fields (ch, ch_mult, z_channels, ...);
                       the published loader assumes the FLUX VAE, so a checkpoint with another VAE states it here
    ae_config.json     optional, ours: the same as a diffusers AutoencoderKL config; read before ae_params.json.
                       With neither file the VAE is the FLUX one (its published parameters).

The latent and ViT position tables' sizes are read from the tensors' shapes.

    model = load_lladao("LLaDA-o/")        save_lladao(model, "out/")
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..models.latents import FLUX_VAE
from ..models.lladao import LLaDAO, LLaDAOConfig
from . import core
from . import rules as R
from .io import TensorSource, atomic_directory, write_json, write_weights
from .llada import LLAMA_NAMES, _layer_rules, llama_config, llama_config_json

LLM_CONFIG, VIT_CONFIG, AE, AE_CONFIG = "llm_config.json", "vit_config.json", "ae.safetensors", "ae_config.json"
AE_PARAMS = "ae_params.json"
EMA, EMA_INDEX = "ema.safetensors", "ema.safetensors.index.json"
NEW_TOKEN_IDS = "new_token_ids.json"  # the published `add_special_tokens` ids, when no tokenizer ships


@dataclass(frozen=True)
class Mapped(R.Rule):
    """A rule whose published tensor is a re-shaped / permuted view of the internal one."""

    to_internal: Callable | None = None
    to_published: Callable | None = None

    def combine(self, tensors):
        return self.to_internal(tensors[0]).contiguous()

    def separate(self, tensor):
        return [self.to_published(tensor).contiguous()]


def mapped(internal: str, source: str, to_internal: Callable, to_published: Callable) -> Mapped:
    return Mapped(internal, (source,), to_internal=to_internal, to_published=to_published)


# --- the language model: Llama names, `_moe_gen` copies ----------------------------------------------

GEN_NAMES = dict(q="self_attn.q_proj_moe_gen", k="self_attn.k_proj_moe_gen", v="self_attn.v_proj_moe_gen",
                 o="self_attn.o_proj_moe_gen", gate="mlp_moe_gen.gate_proj", up="mlp_moe_gen.up_proj",
                 down="mlp_moe_gen.down_proj", attn_norm="input_layernorm_moe_gen",
                 mlp_norm="post_attention_layernorm_moe_gen")


def _expert_rules(cfg: ModelConfig, layer: str, internal: str, names: dict, qk: tuple[str, str]) -> list[R.Rule]:
    rules = _layer_rules(cfg, {k: f"{layer}.{v}" for k, v in names.items()}, internal)
    if cfg.qk_norm:
        rules += [R.one(internal + "attn.q_norm.weight", f"{layer}.self_attn.{qk[0]}.weight"),
                  R.one(internal + "attn.k_norm.weight", f"{layer}.self_attn.{qk[1]}.weight")]
    return rules


def llm_rules(cfg: ModelConfig, generation: bool, prefix: str = "language_model.", internal: str = "language_model.") -> list[R.Rule]:
    """Rules of the MoT language model in Llama names under `prefix` (`_moe_gen` for the generation expert)."""
    rules = [R.one(internal + "embed.weight", prefix + "model.embed_tokens.weight")]
    for i in range(cfg.n_layers):
        layer, mine = f"{prefix}model.layers.{i}", f"{internal}layers.{i}."
        rules += _expert_rules(cfg, layer, mine, LLAMA_NAMES, ("q_norm", "k_norm"))
        if generation:
            rules += _expert_rules(cfg, layer, mine + "gen.", GEN_NAMES, ("q_norm_moe_gen", "k_norm_moe_gen"))
    rules += [R.one(internal + "norm.weight", prefix + "model.norm.weight")]
    if generation:
        rules += [R.one(internal + "norm_gen.weight", prefix + "model.norm_moe_gen.weight")]
    return rules + [R.one(internal + "head.weight", prefix + "lm_head.weight")]


# --- vision tower and the small modules ------------------------------------------------------------


def _patch_linear_rule(internal: str, source: str, channels: int, patch: int) -> Mapped:
    """Conv2d patch embedding (D, C, p, p) <-> the published Linear over (p, p, C) patches (D, p p C)."""
    return mapped(internal, source,
                  lambda t: t.reshape(t.shape[0], patch, patch, channels).permute(0, 3, 1, 2),
                  lambda t: t.permute(0, 2, 3, 1).reshape(t.shape[0], -1))


def vit_rules(state_names: list[str], source_prefix: str, patch_as_linear: bool, channels: int, patch: int) -> list[R.Rule]:
    """`vit.X` <-> `{source_prefix}X`, the patch embedding optionally stored as a Linear."""
    rules = []
    for name in state_names:
        if not name.startswith("vit."):
            continue
        src = source_prefix + name[len("vit."):]
        if patch_as_linear and name == "vit.embeddings.patch_embedding.weight":
            rules.append(_patch_linear_rule(name, src, channels, patch))
        else:
            rules.append(R.one(name, src))
    return rules


SAME_NAME_PREFIXES = ("connector.", "vit_pos_embed.", "vae2llm.", "llm2vae.", "time_embedder.", "latent_pos_embed.")


def ema_rules(model: LLaDAO, state_names: list[str]) -> list[R.Rule]:
    """Every tensor of `ema.safetensors`: language model, ViT, connector and generation modules."""
    cfg = model.config
    rules = llm_rules(cfg.llm, cfg.generation)
    if model.can_see:
        conv = model.vit.embeddings.patch_embedding
        rules += vit_rules(state_names, "vit_model.vision_model.", True, conv.in_channels, conv.kernel_size[0])
    return rules + [R.one(n, n) for n in state_names if n.startswith(SAME_NAME_PREFIXES)]


# --- the VAE: diffusers names <-> the original (LDM / FLUX) names -----------------------------------

_RESNET = {"conv_shortcut": "nin_shortcut"}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _ldm_name(name: str, n_blocks: int) -> str:
    """A diffusers AutoencoderKL key -> its name in the original checkpoints."""
    side, rest = name.split(".", 1)
    rest = rest.replace("conv_norm_out", "norm_out")
    if m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)$", rest):
        kind, b, r, part, leaf = m.groups()
        b = int(b) if kind == "down" else n_blocks - 1 - int(b)  # the decoder's up blocks run in reverse
        return f"{side}.{kind}.{b}.block.{r}.{_RESNET.get(part, part)}.{leaf}"
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(down|up)samplers\.0\.conv\.(\w+)$", rest):
        kind, b, _, leaf = m.groups()
        b = int(b) if kind == "down" else n_blocks - 1 - int(b)
        return f"{side}.{kind}.{b}.{kind}sample.conv.{leaf}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)$", rest):
        r, part, leaf = m.groups()
        return f"{side}.mid.block_{int(r) + 1}.{part}.{leaf}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)\.(\w+)$", rest):
        part, leaf = m.groups()
        return f"{side}.mid.attn_1.{_ATTN[part]}.{leaf}"
    return f"{side}.{rest}"


def ae_rules(vae_state: dict[str, torch.Tensor], n_blocks: int) -> list[R.Rule]:
    """Rules `vae.<diffusers name>` <-> original name; attention projections are 1x1 convs there."""
    rules = []
    for name, tensor in vae_state.items():
        src = _ldm_name(name, n_blocks)
        if ".attentions.0.to_" in name and name.endswith(".weight"):
            rules.append(mapped("vae." + name, src, lambda t: t[:, :, 0, 0], lambda t: t[:, :, None, None]))
        else:
            rules.append(R.one("vae." + name, src))
    return rules


# --- files ------------------------------------------------------------------------------------------


def _read_json(directory: Path, name: str) -> dict:
    return core.read_json(directory / name)


def _table_side(source: TensorSource, key: str, default: int) -> int:
    if key not in source:
        return default
    side = math.isqrt(source.shape(key)[0])
    if side * side != source.shape(key)[0]:
        raise ValueError(f"tensor {key} has {source.shape(key)[0]} rows, not a square position table")
    return side


AE_PARAMS_FIELDS = ("resolution", "in_channels", "ch", "out_ch", "ch_mult", "num_res_blocks", "z_channels",
                    "scale_factor", "shift_factor")


def vae_from_params(params: dict, path: Path) -> dict:
    """The diffusers AutoencoderKL config of a published `AutoEncoderParams` dict (`ae_params.json`).

    The published AutoEncoder is the LDM / FLUX architecture: GroupNorm(32), one attention block in
    the middle, no quant convs, blocks of `ch * mult` channels, downsampling 2**(len(ch_mult) - 1).
    """
    missing = [f for f in AE_PARAMS_FIELDS if f not in params]
    if missing:
        raise ValueError(f"{path} lacks the AutoEncoderParams field(s) {missing}")
    mult = list(params["ch_mult"])
    if "downsample" in params and params["downsample"] != 2 ** (len(mult) - 1):
        raise ValueError(f"{path}: field 'downsample' = {params['downsample']} but ch_mult {mult} downsamples by "
                         f"{2 ** (len(mult) - 1)}")
    return dict(
        in_channels=params["in_channels"], out_channels=params["out_ch"], latent_channels=params["z_channels"],
        down_block_types=["DownEncoderBlock2D"] * len(mult), up_block_types=["UpDecoderBlock2D"] * len(mult),
        block_out_channels=[params["ch"] * m for m in mult], layers_per_block=params["num_res_blocks"],
        norm_num_groups=32, act_fn="silu", sample_size=params["resolution"],
        scaling_factor=params["scale_factor"], shift_factor=params["shift_factor"],
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
    )


def vae_config(directory: Path) -> tuple[dict, str]:
    """(VAE config, where it came from): ae_config.json, else ae_params.json, else the FLUX VAE."""
    if (directory / AE_CONFIG).is_file():
        return _read_json(directory, AE_CONFIG), str(directory / AE_CONFIG)
    if (directory / AE_PARAMS).is_file():
        return vae_from_params(_read_json(directory, AE_PARAMS), directory / AE_PARAMS), str(directory / AE_PARAMS)
    return dict(FLUX_VAE), f"the FLUX VAE's published parameters ({directory} has no {AE_PARAMS} or {AE_CONFIG})"


def lladao_config(directory: Path, ema: TensorSource, **overrides) -> LLaDAOConfig:
    """The model config from `llm_config.json`, `vit_config.json`, the VAE config and tensor shapes."""
    hf = _read_json(directory, LLM_CONFIG)
    with core.naming(directory / LLM_CONFIG):
        llm = ModelConfig.from_dict({**llama_config(hf), "qk_norm": bool(hf.get("qk_norm", False)), **overrides})
    has_vit = any(k.startswith("vit_model.") for k in ema.keys())
    has_gen = any(".mlp_moe_gen." in k for k in ema.keys())
    vae = vae_config(directory)[0] if has_gen else None
    cfg = LLaDAOConfig(
        llm=llm, vit=_read_json(directory, VIT_CONFIG) if has_vit else None, vae=vae,
        max_latent_size=_table_side(ema, "latent_pos_embed.pos_embed", 32),
        vit_max_patches_per_side=_table_side(ema, "vit_pos_embed.pos_embed", 70),
    )
    if has_gen and "vae2llm.weight" in ema:
        cfg.latent_patch_size = math.isqrt(ema.shape("vae2llm.weight")[1] // cfg.latent_channels)
    return cfg


def load_lladao(path: str | Path, device=None, dtype: torch.dtype | None = None, **overrides) -> LLaDAO:
    """Load a checkpoint in the published LLaDA-o layout; `overrides` replace language config fields."""
    directory, device = Path(path), torch.device(device or "cpu")
    _read_json(directory, LLM_CONFIG)  # the first file a reader needs: name it if it is missing
    ema = TensorSource(directory, single=EMA, index=EMA_INDEX)
    cfg = lladao_config(directory, ema, **overrides)
    try:
        model = core.build_meta(lambda: LLaDAO(cfg))
    except (KeyError, TypeError, ValueError) as error:
        vae = f", VAE from {vae_config(directory)[1]}" if cfg.generation else ""
        raise ValueError(f"{directory}: {LLM_CONFIG} / {VIT_CONFIG}{vae} do not describe a model: {error}") from None
    names = list(model.state_dict())
    state = core.load_state(model, ema_rules(model, names), ema, device, dtype, layers_field="num_hidden_layers")
    if model.can_draw:
        vae_state = {k[len("vae."):]: v for k, v in model.state_dict().items() if k.startswith("vae.")}
        rules = ae_rules(vae_state, len(model.config.vae["block_out_channels"]))
        try:
            state.update(core.load_state(model, rules, TensorSource(directory, single=AE, index=None), device, dtype))
        except (KeyError, ValueError) as error:  # the VAE config is a guess when the layout has none: say whose
            raise ValueError(f"{directory / AE} does not match the VAE of {vae_config(directory)[1]}: "
                             f"{error.args[0]}") from None
    model = core.finish(model, state, device)
    if model.config.freeze_und:
        model.freeze_understanding()
    model.source_format = "lladao"
    return model


def llm_config_json(cfg: ModelConfig, generation: bool) -> dict:
    layer = "LLaDAMoTDecoderLayer" if generation else "LLaDADecoderLayer"
    return {**llama_config_json(cfg), "qk_norm": cfg.qk_norm, "layer_module": layer}


def save_lladao(model: LLaDAO, path: str | Path, max_shard_bytes: int | None = None, overwrite: bool = False) -> Path:
    """Write `model` in the published LLaDA-o layout, atomically (temporary directory, then rename)."""
    cfg, state = model.config, {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    ema = R.write(ema_rules(model, list(state)), state)
    with atomic_directory(path, overwrite) as tmp:
        write_weights(tmp, ema, max_shard_bytes, stem="ema")
        write_json(tmp / LLM_CONFIG, llm_config_json(cfg.llm, cfg.generation))
        if cfg.vit is not None:
            write_json(tmp / VIT_CONFIG, dict(cfg.vit))
        if cfg.generation:
            vae_state = {k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")}
            rules = ae_rules(vae_state, len(cfg.vae["block_out_channels"]))
            save_file(R.write(rules, state), tmp / AE, metadata={"format": "pt"})
            if dict(cfg.vae) != FLUX_VAE:
                write_json(tmp / AE_CONFIG, dict(cfg.vae))
    return Path(path)


def image_marker_ids(path: str | Path) -> tuple[int, int] | None:
    """(start_of_image, end_of_image) from the directory's new_token_ids.json, None without one."""
    file = Path(path) / NEW_TOKEN_IDS
    if not file.is_file():
        return None
    ids = _read_json(Path(path), NEW_TOKEN_IDS)
    try:
        return int(ids["start_of_image"]), int(ids["end_of_image"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{file}: needs integer 'start_of_image' and 'end_of_image'") from None
