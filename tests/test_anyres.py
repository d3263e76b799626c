"""LLaDA-V's image handling and prompt against what the published code recorded on llada-v-tiny:
anyres tiles (best canvas, resize-and-pad, row-major tiles after the whole-image tile), spatial_unpad
features (unpadding, bilinear downscaling past anyres_max_1, one image_newline per row, base first),
the prompt template and -200 splitting, the inputs embeddings and the logits (to 1e-4)."""

import json
import math

import pytest
import torch
from PIL import Image

from conftest import FIXTURES, reference
from omnidlm.models import anyres as A
from omnidlm.sampling import llada_v as V
from omnidlm.sequence.tokenizer import Tokenizer

LLADA_V = FIXTURES / "llada-v-tiny"
REF = reference("llada-v-tiny")
CASES = REF["cases"]
QUESTION = "Please describe the image in detail."


def spec_of(model) -> A.AnyRes:
    return A.AnyRes.from_config(model.config.extra, model.vit.image_size)


@pytest.fixture(scope="module")
def embedded(llada_v_tiny):
    """Per case: (inputs embeddings (L, D), image spans, logits (L, V)) of our forward."""
    out = []
    for case in CASES:
        x, spans = A.embed_prompt(llada_v_tiny, case["input_ids"], [Image.open(LLADA_V / case["image"])])
        with torch.no_grad():
            logits = llada_v_tiny.language_model(inputs_embeds=x[None]).logits[0]
        out.append((x, spans, logits))
    return out


def test_pinpoints_expand_like_the_scripts():
    """train.py expands the scripts' "(1x1),...,(6x6)" into the 36 pairs config.json holds."""
    pins = A.expand_pinpoints("(1x1),...,(6x6)", 384)
    recorded = json.loads((LLADA_V / "config.json").read_text())["image_grid_pinpoints"]
    assert [list(p) for p in pins] == recorded and len(pins) == 36


@pytest.mark.parametrize("case", CASES, ids=[c["image"] for c in CASES])
def test_tiles_are_the_published_ones(llada_v_tiny, case):
    image, rec = Image.open(LLADA_V / case["image"]), case["processing"]
    spec = spec_of(llada_v_tiny)
    assert list(image.size) == case["image_size_wh"]
    assert list(A.best_resolution(image.size, spec.pinpoints)) == rec["best_resolution_wh"]
    tiles = A.image_tiles(image, spec)
    assert list(tiles.shape) == rec["tiles_shape"]
    assert math.isclose(float(tiles.double().sum()), rec["tiles_sum"], rel_tol=1e-9)
    assert math.isclose(float(tiles.double().abs().sum()), rec["tiles_abs_sum"], rel_tol=1e-9)
    sample = torch.tensor(rec["tiles_sample"]).reshape(tiles.shape[0], 3, 6, 6)
    assert torch.equal(tiles[:, :, ::64, ::64], sample)


def test_unpad_crops_the_padding_like_the_published_code():
    fmap = torch.arange(27 * 54).float().view(1, 27, 54)
    assert A.unpad(fmap, (500, 300)).shape == (1, 27, 46)  # int(500 * 27 / 300) = 45, (54 - 45) // 2 = 4 a side
    assert A.unpad(fmap.view(1, 54, 27), (250, 480)).shape == (1, 52, 27)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c["image"] for c in CASES])
def test_image_tokens_are_laid_out_as_published(llada_v_tiny, embedded, i):
    case, (x, spans, _) = CASES[i], embedded[i]
    lay = case["layout"]
    assert x.shape[0] == lay["seq_len"] and spans == [tuple(lay["image_span"])]
    assert spans[0][1] - spans[0][0] == lay["n_image_tokens"] == 729 + lay["grid_rows"] * (lay["grid_cols"] + 1)
    newline = llada_v_tiny.image_newline
    rows = x[lay["newline_positions"]]
    assert len(lay["newline_positions"]) == lay["grid_rows"] and torch.equal(rows, newline.expand_as(rows))
    others = torch.ones(x.shape[0], dtype=torch.bool)
    others[lay["newline_positions"]] = False
    assert not (x[others] == newline).all(1).any()  # nowhere else


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c["image"] for c in CASES])
def test_embeddings_and_logits_match_the_published_forward(embedded, i):
    case, (x, _, logits) = CASES[i], embedded[i]
    assert (x[::5] - torch.tensor(case["inputs_embeds_rows"])).abs().max() < 1e-4
    assert (logits[::5] - torch.tensor(case["logits_rows"])).abs().max() < 1e-4
    assert logits.argmax(-1).tolist() == case["logits_argmax"]


def test_prompt_is_the_published_template_and_splitting():
    tok = Tokenizer.from_file(LLADA_V)
    case = CASES[0]
    assert V.render_prompt(QUESTION) == case["prompt"]
    ids = V.prompt_ids(tok, QUESTION)
    assert ids == case["input_ids"] and ids.index(A.IMAGE_TOKEN_INDEX) == case["image_placeholder_pos"]
    assert V.banned_ids(tok) == tuple(REF["generate_suppressed_ids"])


def test_placeholder_count_must_match_the_images(llada_v_tiny):
    with pytest.raises(ValueError, match="1 image placeholder"):
        A.embed_prompt(llada_v_tiny, [1, A.IMAGE_TOKEN_INDEX, 2], [])


def test_unsupported_image_settings_are_named():
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        A.AnyRes.from_config({"image_aspect_ratio": "pad"}, 384)
    with pytest.raises(ValueError, match="mm_patch_merge_type"):
        A.AnyRes.from_config({"image_aspect_ratio": "anyres", "mm_patch_merge_type": "flat"}, 384)
