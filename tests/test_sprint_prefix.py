"""SPRINT on requests with a multimodal prefix (LLaDA-o's understanding: exact cache, block
attention). A prefix of prompt embeddings split block-causally is the prompt itself
(tests/test_engine_prefix.py), so under SPRINT it must prune the same positions and give the same
tokens as the token prompt; image embeddings keep their own ratio (`Prefix.image_mask`)."""

from pathlib import Path

import torch

from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig, generate
from omnidlm.sampling.policies import Threshold
from omnidlm.sampling.prefix import PREFIX_SLOT, Prefix, split_mask
from omnidlm.sampling.sprint import Sprint
from test_engine import prompts

BL = 8


def sprint_config(**sprint) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=16, block_length=BL, attention="block", cache="exact",
                          policy=Threshold(0.3, BL), sprint=Sprint(warmup=1, **sprint))


def embedded(model, ids, image_mask=None) -> Prefix:
    with torch.no_grad():
        embeds = model.embed(torch.tensor(ids))
    return Prefix(embeds, torch.arange(len(ids)), split_mask(torch.arange(len(ids)) // BL), image_mask=image_mask)


def test_a_prefix_of_prompt_embeddings_is_pruned_as_the_token_prompt(llada2_tiny):
    cfg = sprint_config(keep_text=0.5)
    checked = 0
    for p in prompts(6, 380, seed=41, max_len=40):
        cut = len(p) // BL * BL  # the prompt's cached whole blocks: the candidates SPRINT scores
        if cut == 0:
            continue
        engine = BatchEngine(llada2_tiny, cfg, max_batch=1)
        engine.add(Request(p[cut:], prefix=embedded(llada2_tiny, p[:cut])))
        engine.step()
        kept_prefix = int((engine.cache.slot_pos[0] == PREFIX_SLOT).sum())
        assert kept_prefix == cut // 2  # half of the prefix left the cache
        as_tokens = generate(llada2_tiny, [p], cfg)[0].tokens
        with_prefix = generate(llada2_tiny, [Request(p[cut:], prefix=embedded(llada2_tiny, p[:cut]))], cfg)[0].tokens
        assert with_prefix == as_tokens and len(as_tokens) > 0
        checked += 1
    assert checked >= 3


def test_prefix_images_keep_their_own_ratio(llada2_tiny):
    ids = list(range(10, 26))  # 16 prefix embeddings: text 0-4, "image" 5-10, text 11-15
    image = torch.zeros(16, dtype=torch.bool)
    image[5:11] = True
    for mask, kept in ((image, 10 + 2), (None, 8)):  # keep_image 1/3 of 6; without a mask all are text
        engine = BatchEngine(llada2_tiny, sprint_config(keep_text=1.0 if mask is not None else 0.5,
                                                        keep_image=1 / 3), max_batch=1)
        engine.add(Request([3], prefix=embedded(llada2_tiny, ids, mask)))
        engine.step()
        assert int((engine.cache.slot_pos[0] == PREFIX_SLOT).sum()) == kept
        assert engine.rows[0].shift == -kept  # canvas position 0 goes right after the kept slots
        while engine.busy:
            engine.step()


def test_lladao_understanding_takes_sprint_and_keeping_everything_changes_nothing():
    from omnidlm import systems
    from omnidlm.data.digits import digit_images
    from omnidlm.sampling import omni as O

    loaded = systems.open(Path(__file__).resolve().parents[1] / "models" / "lladao-digits")
    model, tok = loaded.model, loaded.tokenizer
    images = list(digit_images("heldout", 32)[0][:3])
    questions = ["Describe the image.", "What digit is shown?", "What is the digit plus 2?"]
    requests = lambda: O.understanding_requests(model, tok, images, questions)
    assert [int(r.prefix.image_mask.sum()) for r in requests()] == [4, 4, 4]  # the ViT tokens of a 16x16 digit
    plain = O.understanding_config(model)
    keep_all = SamplingConfig(**{**plain.__dict__, "sprint": Sprint(keep_text=1.0, keep_image=1.0)})
    with torch.no_grad():
        want = [r.tokens for r in O.understanding_engine(model, plain).run(requests())]
        got = [r.tokens for r in O.understanding_engine(model, keep_all).run(requests())]
    assert got == want and all(want)
