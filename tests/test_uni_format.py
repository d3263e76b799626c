"""The LLaDA2.0-Uni checkpoint layout (`omnidlm/formats/uni.py`): round trips, errors, atomic writes."""

import json
import sys
import types

import pytest
import torch
from torch import nn

import omnidlm
from omnidlm.config import preset
from omnidlm.data.char_tokenizer import build_char_tokenizer
from omnidlm import formats
from omnidlm.formats import uni as U
from omnidlm.formats.io import TensorSource
from omnidlm.formats.llada2 import llada2_rules
from omnidlm.models.uni import LLaDA2Uni, UniConfig, UniVocab
from omnidlm.sequence.tokenizer import Tokenizer

VOCAB = UniVocab.for_text(103, max_side=8, codebook_size=16)


class StandInVQ(nn.Module):
    """Follows SiglipVQ's interface: built from a config dict kept as `.config`."""

    def __init__(self, cfg: dict):
        super().__init__()
        if "codebook_size" not in cfg:
            raise ValueError("VQ config lacks field(s) ['codebook_size']")
        self.config = dict(cfg)
        self.codebook = nn.Embedding(cfg["codebook_size"], cfg["code_dim"])
        self.proj = nn.Conv2d(8, cfg["code_dim"], 1)


class StandInDecoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.config = dict(cfg)
        self.code_embed = nn.Embedding(cfg["codebook_size"], cfg["hidden_size"])
        self.vae = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
        self.register_buffer("positions", torch.randn(4, cfg["hidden_size"]), persistent=False)


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    for name, cls_name, cls in (("vq", "SiglipVQ", StandInVQ), ("uni_decoder", "UniDecoder", StandInDecoder)):
        module = types.ModuleType(f"omnidlm.models.{name}")
        setattr(module, cls_name, cls)
        monkeypatch.setitem(sys.modules, f"omnidlm.models.{name}", module)


def tiny_uni(tokenizer: bool = True, decoder: bool = True) -> LLaDA2Uni:
    torch.manual_seed(0)
    llm = preset("llada2-tiny", vocab_size=VOCAB.total, mask_id=101, eos_id=97, n_layers=2,
                 block_size=8, bos_id=96, eot_id=98)
    cfg = UniConfig(llm=llm, vocab=VOCAB, tokenizer={"codebook_size": 16, "code_dim": 4} if tokenizer else None,
                    decoder={"codebook_size": 16, "hidden_size": 8} if decoder else None)
    model = LLaDA2Uni(cfg)
    with torch.no_grad():
        model.backbone.layers[1].mlp.router.expert_bias.normal_()  # balancing state is saved too
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[1, 2, 3] + VOCAB.image_ids(torch.tensor([[3, 4], [5, 6]])) + [101, 101]])


def test_round_trip_is_bit_exact(tmp_path):
    model = tiny_uni()
    U.save_uni(model, tmp_path / "uni", tokenizer=Tokenizer(build_char_tokenizer()))
    names = sorted(p.relative_to(tmp_path / "uni").as_posix() for p in (tmp_path / "uni").rglob("*") if p.is_file())
    assert names == ["config.json", "decoder/config.json", "decoder/model.safetensors", "image_tokenizer/config.json",
                     "image_tokenizer/model.safetensors", "model.safetensors", "tokenizer.json"]
    back = U.load_uni(tmp_path / "uni")
    assert back.config == model.config
    assert torch.equal(logits(back, IDS), logits(model, IDS))
    for part in ("backbone", "tokenizer", "decoder"):
        want, got = getattr(model, part).state_dict(), getattr(back, part).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert isinstance(back.tokenizer, StandInVQ) and back.source_format == "uni"


def test_sharded_round_trip_and_no_image_parts(tmp_path):
    model = tiny_uni(decoder=False)
    U.save_uni(model, tmp_path / "uni", max_shard_bytes=20_000)
    assert (tmp_path / "uni" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "uni" / "decoder").exists()
    back = U.load_uni(tmp_path / "uni")
    assert back.decoder is None and back.config == model.config
    assert torch.equal(logits(back, IDS), logits(model, IDS))


def test_config_json_fields(tmp_path):
    U.save_uni(tiny_uni(), tmp_path / "uni")
    hf = json.loads((tmp_path / "uni" / "config.json").read_text())
    assert hf["model_type"] == "llada2_moe" and hf["vocab_size"] == 129
    assert {k: hf[k] for k in U.VOCAB_FIELDS.values()} == dict(
        image_token_offset=113, image_codebook_size=16, image_start_token_id=103, image_end_token_id=104,
        imgsize_start_token_id=105, imgsize_max=8)
    assert hf["uni_components"] == ["image_tokenizer", "decoder"]
    assert hf["omnidlm_overrides"] == {"block_size": 8, "bos_id": 96, "eot_id": 98, "pad_id": None}


def test_backbone_is_a_plain_llada2_checkpoint(tmp_path):
    model = tiny_uni()
    U.save_uni(model, tmp_path / "uni")
    keys = set(TensorSource(tmp_path / "uni").keys())
    assert keys == {name for rule in llada2_rules(model.backbone.config) for name in rule.sources}
    assert "model.layers.1.mlp.gate.expert_bias" in keys
    backbone = formats.load(tmp_path / "uni")  # the llada2 text reader reads the backbone alone
    assert backbone.source_format == "llada2"
    assert torch.equal(logits(backbone, IDS), logits(model, IDS))
    whole = omnidlm.load(tmp_path / "uni")  # the registry finds the whole Uni model
    assert type(whole).__name__ == "LLaDA2Uni" and whole.source_format == "uni"


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "image_tokenizer/config.json",
                                     "image_tokenizer/model.safetensors", "decoder/model.safetensors"])
def test_missing_file_is_named(tmp_path, missing):
    U.save_uni(tiny_uni(), tmp_path / "uni")
    (tmp_path / "uni" / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.split("/")[-1]) as e:
        U.load_uni(tmp_path / "uni")
    assert missing.split("/")[0] in str(e.value)


def test_missing_listed_part_folder_is_named(tmp_path):
    U.save_uni(tiny_uni(), tmp_path / "uni")
    for f in (tmp_path / "uni" / "decoder").iterdir():
        f.unlink()
    (tmp_path / "uni" / "decoder").rmdir()
    with pytest.raises(FileNotFoundError, match="decoder/config.json"):
        U.load_uni(tmp_path / "uni")


def _edit_config(path, **changes):
    hf = json.loads((path / "config.json").read_text())
    hf.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del hf[k]
    (path / "config.json").write_text(json.dumps(hf))


def test_bad_config_fields_are_named(tmp_path):
    path = tmp_path / "uni"
    U.save_uni(tiny_uni(), path)
    _edit_config(path, image_codebook_size=0)
    with pytest.raises(ValueError, match="'image_codebook_size' must be positive"):
        U.load_uni(path)
    _edit_config(path, image_codebook_size=16, imgsize_max=None)
    with pytest.raises(ValueError, match=r"lacks .*\['imgsize_max'\]"):
        U.load_uni(path)
    _edit_config(path, imgsize_max=8, image_codebook_size=20)  # disagrees with vocab_size
    with pytest.raises(ValueError, match="'llm.vocab_size' \\(129\\)"):
        U.load_uni(path)
    _edit_config(path, image_codebook_size=16, uni_components=["decoder", "vae"])
    with pytest.raises(ValueError, match="'uni_components' .*\\['vae'\\]"):
        U.load_uni(path)
    _edit_config(path, uni_components=["image_tokenizer", "decoder"], image_token_offset=None)
    with pytest.raises(ValueError, match="no 'image_token_offset'"):
        U.load_uni(path)


def test_bad_part_config_and_tensor_shape_are_named(tmp_path):
    path = tmp_path / "uni"
    U.save_uni(tiny_uni(), path)
    good = (path / "image_tokenizer" / "config.json").read_text()
    (path / "image_tokenizer" / "config.json").write_text(json.dumps({"code_dim": 4}))
    with pytest.raises(ValueError, match="image_tokenizer/config.json.*codebook_size"):
        U.load_uni(path)
    (path / "image_tokenizer" / "config.json").write_text(json.dumps({**json.loads(good), "code_dim": 5}))
    with pytest.raises(ValueError, match="tensor codebook.weight .*\\(16, 4\\).*\\(16, 5\\)"):
        U.load_uni(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "uni"
    U.save_uni(tiny_uni(decoder=False), path)
    before = sorted(p.name for p in path.rglob("*"))

    def crash(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(U, "_save_part", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        U.save_uni(tiny_uni(), path)  # over an existing checkpoint
    with pytest.raises(RuntimeError, match="disk full"):
        U.save_uni(tiny_uni(), tmp_path / "new")
    assert sorted(p.name for p in path.rglob("*")) == before  # the old one is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uni"]  # no half-written or temporary folders
    with pytest.raises(FileExistsError):
        U.save_uni(tiny_uni(), path, overwrite=False)


def test_real_tokenizer_and_decoder_round_trip(tmp_path, monkeypatch):
    """The same with the real SiglipVQ and UniDecoder, when those files are there."""
    monkeypatch.delitem(sys.modules, "omnidlm.models.vq")
    monkeypatch.delitem(sys.modules, "omnidlm.models.uni_decoder")
    try:
        from omnidlm.models.uni_decoder import DIGITS_DECODER
        from omnidlm.models.vq import TINY_VQ
    except ImportError as e:
        pytest.skip(f"image parts not available: {e}")
    decoder = {**DIGITS_DECODER, "codebook_size": 16, "hidden_size": 32, "n_layers": 1, "n_heads": 2}
    llm = preset("llada2-tiny", vocab_size=VOCAB.total, mask_id=101, eos_id=97, n_layers=2)
    model = LLaDA2Uni(UniConfig(llm=llm, vocab=VOCAB, tokenizer=dict(TINY_VQ), decoder=decoder)).eval()
    U.save_uni(model, tmp_path / "uni")
    back = U.load_uni(tmp_path / "uni")
    assert type(back.tokenizer).__name__ == "SiglipVQ" and type(back.decoder).__name__ == "UniDecoder"
    assert back.config == model.config
    for part in ("backbone", "tokenizer", "decoder"):
        want, got = getattr(model, part).state_dict(), getattr(back, part).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
