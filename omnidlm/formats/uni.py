"""The LLaDA2.0-Uni checkpoint layout (docs/published/uni.md), read and written.

    config.json                       the llada2_moe backbone config (`llada2.llada2_config_json`) plus
                                      the image vocabulary (below)
    model.safetensors                 the backbone in the llada2 key layout (split experts), or shards
                                      model-0000i-of-0000n.safetensors + model.safetensors.index.json
    image_tokenizer/config.json       the SiglipVQ config dict (models/vq.py)
    image_tokenizer/model.safetensors its state dict, our names
    decoder/config.json               the UniDecoder config dict (models/uni_decoder.py), VAE config inside
    decoder/model.safetensors         its state dict, our names, the VAE's weights included (`vae.*`):
                                      one file per part keeps a part's round trip `Cls(cfg)` + load_state_dict
    decoder_distilled/...             the same for the few-step CFG-free student of the decoder, when trained
    tokenizer.json                    the text tokenizer, when given

Image-vocabulary fields of config.json (`UniVocab`):

    image_token_offset      id of image code 0 (= the number of text ids)
    image_codebook_size     K: image codes are ids [offset, offset + K)
    image_start_token_id    <image>
    image_end_token_id      </image>
    imgsize_start_token_id  <imgsize_1>; <imgsize_s> = imgsize_start_token_id + s - 1
    imgsize_max             S, the largest grid side with a size token
    uni_components          the part folders this checkpoint holds (["image_tokenizer", "decoder"]);
                            a listed folder that is missing is an error, an unlisted one is not read
    omnidlm_overrides       backbone config fields the llada2 fields cannot express (block_size, bos/eot
                            ids, ...), so a round trip gives the same config; ignored by other readers

The backbone part is an ordinary llada2 checkpoint: `omnidlm.load(path)` reads it as a text-only
`Backbone` (the extra fields are ignored); `load_uni` reads the whole model.

    save_uni(model, "out/uni", tokenizer=tok)        model = load_uni("out/uni")
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ..models.uni import LLaDA2Uni, UniConfig, UniVocab
from . import FORMATS, config_json, core, read_config
from . import load as load_backbone
from . import rules as R
from .io import TensorSource, atomic_directory, write_json, write_weights
from .llada2 import llada2_rules

TOKENIZER_DIR, DECODER_DIR, STUDENT_DIR = "image_tokenizer", "decoder", "decoder_distilled"
PARTS = {TOKENIZER_DIR: "tokenizer", DECODER_DIR: "decoder", STUDENT_DIR: "student"}  # folder -> attribute
VOCAB_FIELDS = {  # UniVocab field -> config.json key
    "offset": "image_token_offset", "codebook_size": "image_codebook_size",
    "image_start": "image_start_token_id", "image_end": "image_end_token_id",
    "imgsize_start": "imgsize_start_token_id", "max_side": "imgsize_max",
}


def is_uni(hf: dict) -> bool:
    """Whether a config.json describes a Uni checkpoint."""
    return "image_token_offset" in hf


# --- config.json ---------------------------------------------------------------------------------------


def uni_config_json(cfg: UniConfig, components: list[str]) -> dict:
    vocab = {key: getattr(cfg.vocab, name) for name, key in VOCAB_FIELDS.items()}
    tensors = [name for rule in llada2_rules(cfg.llm) for name in rule.sources]
    return {**config_json(FORMATS["llada2"], cfg.llm, tensors), **vocab, "uni_components": components}


def vocab_from_json(hf: dict, path: Path) -> UniVocab:
    """The UniVocab of a config.json; a missing or bad field is a ValueError naming its key."""
    missing = [key for key in VOCAB_FIELDS.values() if key not in hf]
    if missing:
        raise ValueError(f"{path} lacks the Uni image-vocabulary field(s) {missing}")
    try:
        return UniVocab(**{name: hf[key] for name, key in VOCAB_FIELDS.items()})
    except (TypeError, ValueError) as e:
        message = str(e)
        for name, key in VOCAB_FIELDS.items():  # say it in config.json's names
            message = message.replace(f"'{name}'", f"'{key}'")
        raise ValueError(f"{path}: {message}") from None


# --- the tokenizer and decoder parts --------------------------------------------------------------------


def _save_part(directory: Path, module: nn.Module, max_shard_bytes: int | None) -> None:
    directory.mkdir()
    write_json(directory / "config.json", dict(module.config))
    write_weights(directory, module.state_dict(), max_shard_bytes)


def _load_part(directory: Path, build, device, dtype) -> nn.Module:
    """`build(config)` + the tensors of `directory/model.safetensors`, checked by the loading core."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"Uni checkpoint lacks {cfg_path}")
    try:
        module = build(core.read_json(cfg_path))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    source = TensorSource(directory)  # names the missing model.safetensors / shard
    rules = [R.one(name, name) for name in module.state_dict()]
    module.load_state_dict(core.load_state(module, rules, source, layers_field=f"{cfg_path}'s layer count"))
    return module.to(device=device, dtype=dtype).eval()


def _components(hf: dict, directory: Path) -> list[str]:
    if "uni_components" in hf:
        return list(hf["uni_components"])
    return [d for d in PARTS if (directory / d).is_dir()]


# --- the whole model ----------------------------------------------------------------------------------


def save_uni(model: LLaDA2Uni, path: str | Path, tokenizer=None, overwrite: bool = True,
             max_shard_bytes: int | None = None) -> Path:
    """Write `model` in the Uni layout, atomically (temporary directory, then one rename).

    `tokenizer`: the text tokenizer, as anything with `.save(path)` (ours or a `tokenizers.Tokenizer`)
    or the path of a tokenizer.json; it is written as tokenizer.json.
    """
    cfg = model.config
    parts = {name: getattr(model, attr) for name, attr in PARTS.items() if getattr(model, attr, None) is not None}
    # the modules are the truth (a part's config may have changed since the UniConfig was made)
    cfg = UniConfig(llm=model.backbone.config, vocab=cfg.vocab,
                    tokenizer=dict(model.tokenizer.config) if model.tokenizer is not None else None,
                    decoder=dict(model.decoder.config) if model.decoder is not None else None)
    tensors = R.write(llada2_rules(cfg.llm), model.backbone.state_dict())
    with atomic_directory(path, overwrite) as tmp:
        write_weights(tmp, tensors, max_shard_bytes)
        write_json(tmp / "config.json", uni_config_json(cfg, list(parts)))
        for name, module in parts.items():
            _save_part(tmp / name, module, max_shard_bytes)
        if isinstance(tokenizer, (str, Path)):
            shutil.copy(tokenizer, tmp / "tokenizer.json")
        elif tokenizer is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
    return Path(path)


def load_uni(path: str | Path, device=None, dtype: torch.dtype | None = None) -> LLaDA2Uni:
    """Read a Uni directory: backbone by the llada2 reader, then the image tokenizer and decoder."""
    directory, device = Path(path), torch.device(device or "cpu")
    hf = read_config(directory)  # names a missing directory or config.json
    if not is_uni(hf):
        raise ValueError(f"{directory / 'config.json'} has no 'image_token_offset': not a LLaDA2.0-Uni checkpoint")
    vocab = vocab_from_json(hf, directory / "config.json")
    components = _components(hf, directory)
    unknown = sorted(set(components) - set(PARTS))
    if unknown:
        raise ValueError(f"{directory / 'config.json'} field 'uni_components' names unknown part(s) {unknown}")
    backbone = load_backbone(directory, device, dtype)  # applies `omnidlm_overrides`
    from ..models.uni_decoder import UniDecoder
    from ..models.vq import SiglipVQ

    parts = {PARTS[d]: _load_part(directory / d, SiglipVQ if d == TOKENIZER_DIR else UniDecoder, device, dtype)
             for d in components}
    try:
        cfg = UniConfig(llm=backbone.config, vocab=vocab,
                        **{k: dict(m.config) for k, m in parts.items() if k != "student"})
    except ValueError as e:
        raise ValueError(f"{directory}: {e}") from None
    model = LLaDA2Uni(cfg, backbone=backbone, **parts).eval()
    model.source_format = "uni"
    return model
