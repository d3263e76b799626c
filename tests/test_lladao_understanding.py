"""LLaDA-o understanding against the published code (fixture `lladao-tiny`, tests/data/fixtures):
the training and inference forwards give the recorded logits, and the two recorded greedy runs
(`chat(use_cache=False)` and `chat_block`) give the recorded ids through the engine."""

import dataclasses

import pytest
import torch

from omnidlm.sequence.masks import FULL
from omnidlm.sequence.segments import single, text, vit_image

from test_lladao_published_draw import PATH, model, ref  # noqa: F401 (the fixture model and its record)


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


# -- the recorded greedy runs ------------------------------------------------------------------------

QUESTION = [441, 14, 125, 125]  # the question's ids before the model's [bos] ... [eos] wrapping


def markers():
    from omnidlm.formats.lladao import image_marker_ids

    return image_marker_ids(PATH)


@pytest.mark.parametrize("run, knobs", [
    ("chat_no_cache", dict(policy="fixed", cache="none")),
    ("chat_block_cache", dict(policy="threshold", threshold=0.95, cache="exact")),
])
def test_the_published_chat_runs_give_the_recorded_ids(model, ref, run, knobs):
    """gen_length 8, block_length 4, steps 8 (4 per block), greedy: the engine's knobs for
    chat(use_cache=False) and chat_block (the ask command's contract)."""
    from omnidlm.sampling.omni import published_answer

    recorded = ref["understanding_generate"][run]["output_ids"]
    ids = published_answer(model, QUESTION, pixels(ref["understanding_train"]), markers(), gen_length=8,
                           block_length=4, steps=8, **knobs)
    assert ids == recorded


def first_step_outputs(model, px, policy: str, cache: str) -> list:
    """The outputs of every forward of the engine's first step on the published question about `px`."""
    from omnidlm.sampling.engine import BatchEngine, Request
    from omnidlm.sampling.omni import published_config, published_question

    cfg = published_config(model, gen_length=8, block_length=4, steps=8, policy=policy, cache=cache)
    engine = BatchEngine(model.language_model, cfg, max_batch=1)
    seen, forward = [], engine.forward
    engine.forward = lambda *a, **kw: seen.append(forward(*a, **kw)) or seen[-1]
    engine.add(Request([500], prefix=published_question(model, QUESTION, px, markers())))
    engine.step()
    return seen


@torch.no_grad()
def test_the_uncached_chat_layout_is_one_full_split(model, ref):
    """The engine's first step under cache "none" gives the logits of ONE forward over
    [image | bos question eos | bos masks] where every token sees every token, with the image at
    position 0 and the rest after it."""
    px, (start, end) = pixels(ref["understanding_train"]), markers()
    seen = first_step_outputs(model, px, policy="fixed", cache="none")
    segs = [vit_image(12), text(6, "full"), text(8, "full")]
    ids = [start] + [0] * 12 + [end, 500, *QUESTION, 501, 500] + [511] * 7
    lay = single(segs)
    assert lay.position_ids[0].tolist() == [0] * 14 + list(range(1, 15))
    lay = dataclasses.replace(lay, split_ids=torch.zeros_like(lay.split_ids),
                              split_modes=torch.full_like(lay.split_modes, FULL))
    full = model(torch.tensor([ids]), lay, vit_images=[px]).logits[0, 20:]
    torch.testing.assert_close(seen[-1].logits[0, 20:], full, atol=1e-5, rtol=1e-5)  # after the 20 prefix rows


@torch.no_grad()
def test_the_cached_chat_block_layout_is_split_by_split(model, ref):
    """The engine's first block step with the prefix in the KVCache gives the logits of one forward
    over [image | bos question eos | bos masks] with three splits (a split sees the earlier splits
    and itself fully), what chat_block's cache updates and block step compute."""
    px, (start, end) = pixels(ref["understanding_train"]), markers()
    seen = first_step_outputs(model, px, policy="threshold", cache="exact")
    assert len(seen) == 2  # the prefill, then the first block against the cache
    ids = [start] + [0] * 12 + [end, 500, *QUESTION, 501, 500] + [511] * 3
    full = model(torch.tensor([ids]), single([vit_image(12), text(6, "full"), text(4, "full")]), vit_images=[px])
    torch.testing.assert_close(seen[-1].logits[0], full.logits[0, 20:], atol=1e-5, rtol=1e-5)
