"""LLaDA-o understanding against the published code (fixture `lladao-tiny`, tests/data/fixtures):
the training and inference forwards give the recorded logits, and the two recorded greedy runs
(`chat(use_cache=False)` and `chat_block`) give the recorded ids through the engine."""

import dataclasses

import pytest
import torch

from omnidlm.formats.lladao import load_lladao
from omnidlm.sequence.masks import FULL
from omnidlm.sequence.segments import single, text, vit_image

from conftest import FIXTURES, reference

PATH = FIXTURES / "lladao-tiny"


@pytest.fixture(scope="module")
def model():
    return load_lladao(PATH).eval()


@pytest.fixture(scope="module")
def ref():
    return reference("lladao-tiny")


def pixels(case) -> torch.Tensor:
    return torch.tensor(case["pixel_values"], dtype=torch.float32)  # (3, 21, 28) in [-1, 1]


def layout_of(case):
    """[text | ViT image (markers) | text | text], every split `full`, as the case records."""
    lens = case["split_lens"] if len(case["split_lens"]) > 1 else [8, 14, 6, 7]
    segs = [text(lens[0], "full"), vit_image(lens[1] - 2), text(lens[2], "full"), text(lens[3], "full")]
    lay = single(segs)
    assert lay.position_ids[0].tolist() == case["position_ids"]
    if len(case["split_lens"]) == 1:  # ONE full split: every token sees every token
        lay = dataclasses.replace(lay, split_ids=torch.zeros_like(lay.split_ids),
                                  split_modes=torch.full_like(lay.split_modes, FULL))
    return lay


@pytest.mark.parametrize("name", ["understanding_train", "understanding_inference"])
def test_the_understanding_forward_gives_the_recorded_logits(model, ref, name):
    case = ref[name]
    if name == "understanding_inference":
        case = {**ref["understanding_train"], **case}
    ids = torch.tensor([[max(i, 0) for i in case["input_ids"]]])
    with torch.no_grad():
        out = model(ids, layout_of(case), vit_images=[pixels(ref["understanding_train"])])
    logits = out.logits[0, case["text_indexes"]]
    expected = torch.tensor(case["logits"])
    err = (logits - expected).abs().max()
    assert err < 4e-6, err
