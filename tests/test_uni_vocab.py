"""The Uni image vocabulary, config and model shell (`omnidlm/models/uni.py`)."""

import json
import sys
import types

import pytest
import torch
from torch import nn

from omnidlm.config import preset
from omnidlm.models.uni import LLaDA2Uni, UniConfig, UniVocab

VOCAB = UniVocab.for_text(103, max_side=8, codebook_size=16)  # markers 103/104, sizes 105..112, codes 113..128


def llm_config(vocab: UniVocab = VOCAB):
    return preset("llada2-tiny", vocab_size=vocab.total, mask_id=101, eos_id=97, n_layers=2)


class StandInVQ(nn.Module):
    """Follows SiglipVQ's interface: built from a config dict kept as `.config`."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.config = dict(cfg)
        self.codebook = nn.Embedding(cfg["codebook_size"], cfg["code_dim"])


class StandInDecoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.config = dict(cfg)
        self.code_embed = nn.Embedding(cfg["codebook_size"], cfg["hidden_size"])
        self.vae = nn.Conv2d(3, 4, 3)
        self.register_buffer("positions", torch.randn(4, cfg["hidden_size"]), persistent=False)


@pytest.fixture
def stand_ins(monkeypatch):
    """Stand-in `models/vq.py` and `models/uni_decoder.py`, whether or not the real files exist."""
    for name, cls_name, cls in (("vq", "SiglipVQ", StandInVQ), ("uni_decoder", "UniDecoder", StandInDecoder)):
        module = types.ModuleType(f"omnidlm.models.{name}")
        setattr(module, cls_name, cls)
        monkeypatch.setitem(sys.modules, f"omnidlm.models.{name}", module)


def test_layout_of_the_vocabulary():
    assert (VOCAB.image_start, VOCAB.image_end) == (103, 104)
    assert list(VOCAB.size_ids) == list(range(105, 113))
    assert VOCAB.offset == 113 and VOCAB.total == 129
    assert VOCAB.code_range == range(113, 129)
    assert VOCAB.size_id(1) == 105 and VOCAB.size_id(8) == 112


def test_image_ids_and_parse_round_trip():
    codes = torch.tensor([[0, 1, 2], [13, 14, 15]])
    ids = VOCAB.image_ids(codes)
    assert ids == [103, 106, 107, 113, 114, 115, 126, 127, 128, 104]  # <image> <imgsize_2> <imgsize_3> row-major </image>
    assert torch.equal(VOCAB.parse_image(ids), codes)
    assert torch.equal(VOCAB.parse_image(torch.tensor(ids)), codes)


def test_image_ids_errors():
    with pytest.raises(ValueError, match=r"image code 16 .*\[0, 16\)"):
        VOCAB.image_ids(torch.tensor([[1, 16]]))
    with pytest.raises(ValueError, match=r"side 9 .*\[1, 8\]"):
        VOCAB.image_ids(torch.zeros(9, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="2D"):
        VOCAB.image_ids(torch.zeros(4, dtype=torch.long))


def test_parse_image_errors_name_what_is_wrong():
    good = VOCAB.image_ids(torch.tensor([[3, 4], [5, 6]]))  # 2 x 2
    with pytest.raises(ValueError, match=r"image token id 129 at position 4 .*\[113, 129\)"):
        VOCAB.parse_image(good[:4] + [129] + good[5:])
    with pytest.raises(ValueError, match=r"image token id 7 .*\[113, 129\)"):  # a text id among the codes
        VOCAB.parse_image(good[:4] + [7] + good[5:])
    with pytest.raises(ValueError, match=r"3 code tokens .* 2 x 2 = 4"):
        VOCAB.parse_image(good[:6] + good[7:])
    with pytest.raises(ValueError, match=r"<image> \(id 103\)"):
        VOCAB.parse_image(good[1:])
    with pytest.raises(ValueError, match=r"</image> \(id 104\)"):
        VOCAB.parse_image(good[:-1])
    with pytest.raises(ValueError, match=r"width token .* got id 50"):
        VOCAB.parse_image(good[:2] + [50] + good[3:])


def test_is_image_and_spans():
    a, b = VOCAB.image_ids(torch.tensor([[1]])), VOCAB.image_ids(torch.tensor([[2, 3]]))
    seq = [5, 6] + a + [7] + b
    assert VOCAB.is_image(seq) == [i >= 113 for i in seq]
    assert torch.equal(VOCAB.is_image(torch.tensor([seq])), torch.tensor([seq]) >= 113)
    assert VOCAB.image_spans(seq) == [(2, 2 + len(a)), (3 + len(a), len(seq))]
    assert [VOCAB.parse_image(seq[s:e]).tolist() for s, e in VOCAB.image_spans(seq)] == [[[1]], [[2, 3]]]


def test_vocabulary_validation_names_the_field():
    with pytest.raises(ValueError, match="'image_end'.*size token"):
        UniVocab(image_start=0, image_end=3, imgsize_start=2, max_side=4, offset=10, codebook_size=4)
    with pytest.raises(ValueError, match="'imgsize_start' \\+ 'max_side'"):
        UniVocab(image_start=0, image_end=1, imgsize_start=2, max_side=9, offset=10, codebook_size=4)
    with pytest.raises(ValueError, match="'codebook_size'"):
        UniVocab.for_text(10, 4, 0)
    with pytest.raises(ValueError, match=r"unknown Uni vocabulary field\(s\) \['offst'\]"):
        UniVocab.from_dict({**VOCAB.to_dict(), "offst": 3})


def test_config_round_trip_and_errors():
    cfg = UniConfig(llm=llm_config(), vocab=VOCAB, tokenizer={"codebook_size": 16, "code_dim": 4},
                    decoder={"codebook_size": 16, "hidden_size": 8})
    data = json.loads(json.dumps(cfg.to_dict()))
    assert UniConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown Uni config field\(s\) \['vae'\]"):
        UniConfig.from_dict({**data, "vae": {}})
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hidden'\]"):
        UniConfig.from_dict({**data, "llm": {**data["llm"], "hidden": 3}})
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['vocab'\]"):
        UniConfig.from_dict({"llm": data["llm"]})
    with pytest.raises(ValueError, match="'llm.vocab_size' \\(384\\) must equal .* 129"):
        UniConfig(llm=preset("llada2-tiny"), vocab=VOCAB)
    with pytest.raises(ValueError, match="'llm.mask_id' \\(120\\)"):
        UniConfig(llm=llm_config().replace(mask_id=120), vocab=VOCAB)
    with pytest.raises(ValueError, match="'decoder.codebook_size' \\(32\\)"):
        UniConfig(llm=llm_config(), vocab=VOCAB, decoder={"codebook_size": 32})


def test_model_builds_its_parts(stand_ins):
    cfg = UniConfig(llm=llm_config(), vocab=VOCAB, tokenizer={"codebook_size": 16, "code_dim": 4},
                    decoder={"codebook_size": 16, "hidden_size": 8})
    model = LLaDA2Uni(cfg)
    assert isinstance(model.tokenizer, StandInVQ) and isinstance(model.decoder, StandInDecoder)
    ids = torch.tensor([[1, 2] + VOCAB.image_ids(torch.tensor([[3, 4]])) + [101]])
    assert model(ids).logits.shape == (1, ids.shape[1], VOCAB.total)
    assert model.backbone.layers[1].mlp.router.expert_bias.shape == (16,)  # MoE backbone


def test_model_without_image_parts_needs_no_image_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "omnidlm.models.vq", None)  # importing it would fail
    monkeypatch.setitem(sys.modules, "omnidlm.models.uni_decoder", None)
    model = LLaDA2Uni(UniConfig(llm=llm_config(), vocab=VOCAB))
    assert model.tokenizer is None and model.decoder is None
    with pytest.raises(ImportError):
        LLaDA2Uni(UniConfig(llm=llm_config(), vocab=VOCAB, tokenizer={"codebook_size": 16}))
