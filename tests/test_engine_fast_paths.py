"""The engine's fast paths give the same bits as the general ones: the KVCache's slice-copy writes
(contiguous slots) against its scatter writes, the sampler's vectorised argmax against torch's,
the mask-free block step against the all-True mask, and a whole generation of each layout."""

import torch
import torch.nn.functional as F

from omnidlm.eval.shapes import random_model
from omnidlm.sampling.cache import KVCache
from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig
from omnidlm.sampling.policies import FixedSteps
from omnidlm.sampling.rows import first_argmax


def _write(cache: KVCache, slots, starts, k, v):
    cache.begin(slots, slots.clone(), width=int(slots.max()) + 1, starts=starts)
    return cache.attend_kv(0, k, v)


def test_contiguous_slot_writes_equal_the_scattered_ones():
    torch.manual_seed(0)
    batch, heads, L, D = 3, 2, 5, 4
    starts = [2, 2, 7]  # two rows share a start (one copy), one does not
    slots = torch.tensor(starts)[:, None] + torch.arange(L)
    k, v = torch.randn(batch, heads, L, D), torch.randn(batch, heads, L, D)
    general, fast = (KVCache(1, batch, heads, D, 16) for _ in range(2))
    for cache in (general, fast):  # something already cached, kept by both paths
        cache.k[0][:, :, :2] = 1.0
    out_general = _write(general, slots, None, k, v)
    out_fast = _write(fast, slots, starts, k, v)
    assert torch.equal(general.k[0], fast.k[0]) and torch.equal(general.v[0], fast.v[0])
    assert all(torch.equal(a, b) for a, b in zip(out_general, out_fast))
    assert torch.equal(fast.k[0][2, :, 7:12], k[2])  # row 2's keys sit at its own start


def test_contiguous_starts_outside_the_cache_are_refused():
    cache = KVCache(1, 1, 1, 2, 8)
    slots = torch.arange(6, 11)[None]
    try:
        cache.begin(slots, slots, width=8, starts=[6])
    except ValueError as e:
        assert "inside length 8" in str(e)
    else:
        raise AssertionError("a range past the cache's length must be refused")


def test_first_argmax_is_torch_argmax_with_ties_nan_and_inf():
    torch.manual_seed(0)
    x = torch.randint(0, 4, (3, 5, 512)).float()  # many ties: the first maximum must win
    x[0, 0] = float("-inf")  # a fully banned row: index 0, as argmax gives
    x[1, 2, 300] = float("nan")
    x[1, 2, 400] = float("nan")
    x[2, 1, 511] = 9.0  # the maximum in the last chunk
    assert torch.equal(first_argmax(x), x.argmax(-1))
    y = torch.randn(2, 7, 32000)
    assert torch.equal(first_argmax(y), y.argmax(-1))
    odd = torch.randn(2, 300)  # not a multiple of the chunk: torch's own argmax
    assert torch.equal(first_argmax(odd), odd.argmax(-1))


def test_attention_without_a_mask_equals_the_all_true_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 16, 8), torch.randn(1, 4, 40, 8), torch.randn(1, 4, 40, 8)
    ones = torch.ones(1, 1, 16, 40, dtype=torch.bool)
    assert torch.equal(F.scaled_dot_product_attention(q, k, v),
                       F.scaled_dot_product_attention(q, k, v, attn_mask=ones))


def _engine_tokens(model, cache, attention, prompts, monkeypatch=None):
    cfg = SamplingConfig(max_new_tokens=48, block_length=16, attention=attention, cache=cache,
                         policy=FixedSteps(4), stop_at_eos=False)
    return [r.tokens for r in BatchEngine(model, cfg, max_batch=len(prompts)).run([Request(p) for p in prompts])]


def test_fast_paths_give_the_tokens_of_the_general_paths(monkeypatch):
    """A batch with unequal prompts (padded forwards: scatters) and one prompt alone (slice copies,
    mask-free block steps): the engine's tokens equal those with every fast path switched off."""
    model = random_model("llada-tiny")
    prompts = [list(range(3, 12)), list(range(20, 41))]
    fast = {(c, a): _engine_tokens(model, c, a, prompts) + _engine_tokens(model, c, a, prompts[:1])
            for c, a in (("exact", "block"), ("approx", "full"))}
    begin = KVCache.begin
    monkeypatch.setattr(KVCache, "begin", lambda self, *a, starts=None, **k: begin(self, *a, **k))
    monkeypatch.setattr("omnidlm.sampling.rows.first_argmax", lambda x: x.argmax(-1))
    plan = BatchEngine._plan  # always a mask (what a bucket's step passes)
    monkeypatch.setattr(BatchEngine, "_plan", lambda self: {**plan(self), "dense": False})
    for (c, a), tokens in fast.items():
        assert tokens == _engine_tokens(model, c, a, prompts) + _engine_tokens(model, c, a, prompts[:1])


def test_the_host_decides_mask_free_steps_exactly_as_the_mask_would(monkeypatch, llada2_tiny):
    """plan["dense"] (decided from the plan on the host, no device read) is True exactly when the
    step's mask would be all True: every cache mode and layout, unequal prompts, rows joining and
    leaving, rows with their own lengths, SPRINT's compacted cache."""
    from omnidlm.sampling.policies import Threshold
    from omnidlm.sampling.sprint import Sprint

    seen = []
    plan_of, mask_of = BatchEngine._plan, BatchEngine._mask

    def plan(self):
        p = plan_of(self)
        self._host_dense = p["dense"]
        return {**p, "dense": False}  # every step builds its mask, to compare

    def mask(self, *args):
        m = mask_of(self, *args)
        seen.append((self.__dict__.pop("_host_dense", False), bool(m.all())))
        return m

    monkeypatch.setattr(BatchEngine, "_plan", plan)
    monkeypatch.setattr(BatchEngine, "_mask", mask)
    model = random_model("llada-tiny")
    prompts = [list(range(3, 12)), list(range(20, 41)), [5, 6], list(range(7, 40))]
    for cache, attention in (("none", "full"), ("none", "block"), ("exact", "block"), ("approx", "full")):
        cfg = SamplingConfig(max_new_tokens=40, block_length=16, attention=attention, cache=cache,
                             policy=FixedSteps(4), stop_at_eos=False)
        engine = BatchEngine(model, cfg, max_batch=2)
        engine.run([Request(p, max_new_tokens=16 * (1 + i % 3)) for i, p in enumerate(prompts)])
        engine.run([Request(prompts[0])])  # one row alone
    sprint = SamplingConfig(max_new_tokens=24, block_length=8, attention="block", cache="exact",
                            policy=Threshold(0.3, 8), sprint=Sprint(keep_text=0.5, warmup=1))
    BatchEngine(llada2_tiny, sprint, max_batch=2).run([list(range(1, 35)), list(range(40, 51))])
    assert all(host == full for host, full in seen), [s for s in seen if s[0] != s[1]][:5]
    assert sum(host for host, _ in seen) > 20 and sum(not host for host, _ in seen) > 20  # both kinds seen
