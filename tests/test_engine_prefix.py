"""Requests with a multimodal prefix (sampling/prefix.py): embeddings with their own positions and
splits, prefilled once into the cache or recomputed with the canvas. A prefix of token embeddings
is the prompt itself, so the engine must give the reference samplers' tokens; prefixes with shared
positions and splits give the same tokens cached and uncached; rows batch with plain rows."""

import pytest
import torch

from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig, generate, reference_config
from omnidlm.sampling.policies import FixedSteps, Threshold
from omnidlm.sampling.prefix import Prefix, split_mask
from omnidlm.sampling.reference import generate as llada_generate
from omnidlm.sampling.reference import generate_llada2
from test_engine import prompts


def embedded(model, ids, splits=None, positions=None):
    with torch.no_grad():
        embeds = model.embed(torch.tensor(ids))
    mask = None if splits is None else split_mask(splits)
    return Prefix(embeds, torch.arange(len(ids)) if positions is None else positions, mask)


@pytest.mark.parametrize("cache", ["exact", "none"])
def test_a_prefix_of_prompt_embeddings_is_the_block_reference_sampler(cache, llada2_tiny):
    """Block attention: a prefix split into blocks is the prompt's cached blocks; the canvas may
    open with the prompt's tail (it shares the prefix's last block)."""
    bl, G = 8, 24
    cfg = SamplingConfig(max_new_tokens=G, block_length=bl, attention="block", cache=cache, policy=Threshold(0.5, bl))
    for k, p in enumerate(prompts(3, 380, seed=31, max_len=30)):
        p = p + [7] * (-len(p) % bl) if k % 2 == 0 else p  # a whole number of blocks, or not
        cut = len(p) // bl * bl if k % 2 else len(p)
        if cut == 0:
            continue
        splits = torch.arange(cut) // bl  # a split sees earlier splits and itself: block-causal
        req = Request(p[cut:], prefix=embedded(llada2_tiny, p[:cut], splits))
        expected = generate_llada2(llada2_tiny, p, gen_length=G, block_length=bl, steps=bl, threshold=0.5)
        assert generate(llada2_tiny, [req], cfg)[0].tokens == expected[0].tolist()


@pytest.mark.parametrize("case", [0, 1, 2])
def test_a_prefix_with_full_attention_and_no_cache_is_llada_generate(case, llada_tiny):
    """Every token sees every token: the prefix is the prompt of LLaDA's reference sampler."""
    from conftest import reference

    g = reference("llada-tiny")["generate"][case]
    a = g["args"]
    cfg = reference_config("full", a["block_length"], a["gen_length"], a["steps"] // (a["gen_length"] // a["block_length"]))
    out = generate(llada_tiny, [Request([], prefix=embedded(llada_tiny, g["prompt"]))], cfg)[0]
    assert out.tokens == g["output"]


def image_like_prefix(model, seed):
    """[text | 6 'image' tokens at ONE position | text]: three splits, positions 0..3, 4 x6, 5..7."""
    g = torch.Generator().manual_seed(seed)
    D = model.config.hidden_size
    embeds = torch.randn(13, D, generator=g) * 0.5
    positions = torch.tensor([0, 1, 2, 3] + [4] * 6 + [5, 6, 7])
    mask = split_mask(torch.tensor([0] * 4 + [1] * 6 + [2] * 3))
    mask[:4, :4] = torch.ones(4, 4).tril().bool()  # the first text split causal, as the digits models' prompts
    return Prefix(embeds, positions, mask)


def test_a_shared_position_prefix_gives_the_same_answer_cached_and_uncached(llada2_tiny):
    base = dict(max_new_tokens=20, block_length=8, attention="block", policy=Threshold(0.4, 8))
    for seed in range(3):
        reqs = lambda: [Request([5, 9], prefix=image_like_prefix(llada2_tiny, seed))]
        exact = generate(llada2_tiny, reqs(), SamplingConfig(cache="exact", **base))[0]
        none = generate(llada2_tiny, reqs(), SamplingConfig(cache="none", **base))[0]
        assert exact.tokens == none.tokens and len(exact.tokens) > 0


@pytest.mark.parametrize("attention, cache", [("block", "exact"), ("block", "none"), ("full", "none"), ("full", "approx")])
def test_prefix_rows_and_plain_rows_batch_as_they_run_alone(attention, cache, llada2_tiny, llada_tiny):
    model = llada2_tiny if attention == "block" else llada_tiny
    vocab = 380 if attention == "block" else 500
    cfg = SamplingConfig(max_new_tokens=16, block_length=8, attention=attention, cache=cache, policy=FixedSteps(4))

    def requests():
        plain = [Request(p) for p in prompts(3, vocab, seed=37)]
        with_prefix = [Request([3], prefix=image_like_prefix(model, s), max_new_tokens=9 + s) for s in range(3)]
        return [r for pair in zip(plain, with_prefix) for r in pair]

    alone = [generate(model, [r], cfg, max_batch=1)[0].tokens for r in requests()]
    together = generate(model, requests(), cfg, max_batch=4)
    assert [r.tokens for r in together] == alone


def test_prefill_is_one_forward_for_the_rows_admitted_together(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=8, block_length=8, attention="block", cache="exact", policy=Threshold(0.0, 8))
    engine = BatchEngine(llada2_tiny, cfg, max_batch=4)
    calls, forward = [], engine.forward
    engine.forward = lambda *a, **kw: calls.append(kw.get("inputs_embeds") is not None) or forward(*a, **kw)
    for s in range(3):
        engine.add(Request([3], prefix=image_like_prefix(llada2_tiny, s)))
    engine.step()
    assert calls == [True, False]  # one prefill of the three prefixes, then one denoising step
    assert (engine.cache.slot_pos[:3, :13] == -2).all()  # the prefix slots


def test_bad_prefixes_say_what():
    from test_engine import MockModel, confident

    engine = BatchEngine(MockModel(confident(lambda p: 3, 0.9)), SamplingConfig(max_new_tokens=8, block_length=4))
    with pytest.raises(ValueError, match="hidden size"):
        engine.add(Request([], prefix=Prefix(torch.zeros(3, 5), torch.arange(3))))
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        engine.add(Request([]))
    with pytest.raises(ValueError, match="non-decreasing"):
        split_mask(torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="sees nothing"):
        Prefix(torch.zeros(3, 8), torch.arange(3), torch.eye(3).bool() & False)
    with pytest.raises(ValueError, match=r"must be \(3, 3\)"):
        Prefix(torch.zeros(3, 8), torch.arange(3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="position_ids has 2"):
        Prefix(torch.zeros(3, 8), torch.arange(2))
    with pytest.raises(ValueError, match="image_mask has 2"):
        Prefix(torch.zeros(3, 8), torch.arange(3), image_mask=[True, False])


def test_canvas_shows_the_current_block_with_its_masks():
    from test_engine import MASK, MockModel, confident

    model = MockModel(confident(lambda p: 3, 0.5))  # one token per step
    engine = BatchEngine(model, SamplingConfig(max_new_tokens=8, block_length=4, policy=Threshold(0.9, 4)))
    rid = engine.add([1, 2, 4, 5])
    engine.step()
    assert engine.canvas() == {rid: [3, MASK, MASK, MASK]}
    for _ in range(4):
        engine.step()
    assert engine.canvas() == {rid: [3, 3, 3, 3, 3, MASK, MASK, MASK]}
