"""The inference engine against the reference samplers: exact cache = uncached block-causal sampler,
fixed + none = LLaDA's sampler, cached logits = uncached logits, batching = running alone; policies
and adaptive length with mock models; SPRINT; documented errors."""

from pathlib import Path

import pytest
import torch

from conftest import reference
from omnidlm.config import ModelConfig
from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig, generate, reference_config
from omnidlm.sampling.policies import Factor, FixedSteps, Threshold, make_policy, step_minimum, top_k_mask
from omnidlm.sampling.reference import generate as llada_generate
from omnidlm.sampling.reference import generate_llada2, transfer_schedule
from omnidlm.sampling.rows import RowSettings
from omnidlm.sampling.sprint import Sprint, keep_positions
from omnidlm.sequence.masks import block_causal_mask

V, MASK, EOS = 12, 10, 11



def prompts(n, vocab, seed, max_len=30):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len, (n,), generator=g).tolist()
    return [torch.randint(0, vocab - 8, (k,), generator=g).tolist() for k in lengths]


# -- exactness on the fixtures ------------------------------------------------------------------

LLADA2_SETTINGS = [  # block_length, gen_length, steps, threshold
    (8, 24, 8, 0.95), (16, 32, 4, 0.9), (8, 16, 8, 0.0), (4, 20, 4, 0.5), (8, 24, 3, 1.0), (16, 40, 16, 0.3),
]


@pytest.mark.parametrize("cache", ["exact", "none"])
@pytest.mark.parametrize("setting", LLADA2_SETTINGS)
def test_exact_cache_equals_uncached_llada2_sampler(setting, cache, llada2_tiny):
    bl, G, steps, tau = setting
    cfg = SamplingConfig(max_new_tokens=G, block_length=bl, attention="block", cache=cache,
                         policy=Threshold(tau, min(steps, G)))
    for p in prompts(3, 380, seed=bl * G + steps):
        expected = generate_llada2(llada2_tiny, p, gen_length=G, block_length=bl, steps=steps, threshold=tau)
        assert generate(llada2_tiny, [p], cfg)[0].tokens == expected[0].tolist()


def test_exact_cache_fixed_policy_equals_one_token_per_step_sampler(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=24, block_length=8, attention="block", cache="exact", policy=FixedSteps(8))
    for p in prompts(4, 380, seed=7):
        expected = generate_llada2(llada2_tiny, p, gen_length=24, block_length=8, steps=8, threshold=1.0)
        assert generate(llada2_tiny, [p], cfg)[0].tokens == expected[0].tolist()


@pytest.mark.parametrize("case", [0, 1, 2, 3, 6, 7])
def test_fixed_policy_without_cache_is_the_llada_reference(case, llada_tiny):
    g = reference("llada-tiny")["generate"][case]
    a = g["args"]
    cfg = reference_config("full", a["block_length"], a["gen_length"], a["steps"] // (a["gen_length"] // a["block_length"]))
    out = generate(llada_tiny, [g["prompt"]], cfg)[0]
    assert out.tokens == g["output"]
    assert out.tokens == llada_generate(llada_tiny, [g["prompt"]], mask_id=500, **a)[0].tolist()


def test_cached_block_logits_equal_uncached_logits(llada2_tiny):
    bl = 8
    cfg = SamplingConfig(max_new_tokens=24, block_length=bl, attention="block", cache="exact", policy=Threshold(0.2, bl))
    engine = BatchEngine(llada2_tiny, cfg, max_batch=1)
    records, forward = [], engine.forward

    def spy(tokens, **kwargs):
        block = engine.rows[0].block
        canvas = engine.tokens[:1, : block + bl].clone()
        out = forward(tokens, **kwargs)
        assert out.logits.shape[1] == bl  # with a cache only the block goes through the head
        records.append((canvas, out.logits))
        return out

    engine.forward = spy
    engine.run([prompts(1, 380, seed=3, max_len=13)[0]])
    assert len(records) >= 3 and len({c.shape[1] for c, _ in records}) >= 2  # several blocks
    for canvas, cached in records:
        end = canvas.shape[1]
        mask = block_causal_mask(end, bl)[None, None]
        with torch.no_grad():
            uncached = llada2_tiny(canvas, attention_mask=mask).logits[:, end - bl :]
        assert (cached - uncached).abs().max() < 1e-4


@pytest.mark.parametrize("attention, cache, policy", [
    ("block", "exact", Threshold(0.3, 8)), ("block", "exact", Factor(1.0, 8)), ("block", "none", FixedSteps(4)),
    ("full", "approx", Threshold(0.3, 8)), ("full", "none", FixedSteps(4)),
])
def test_every_row_of_a_batch_equals_the_prompt_run_alone(attention, cache, policy, llada2_tiny, llada_tiny):
    model = llada2_tiny if attention == "block" else llada_tiny
    cfg = SamplingConfig(max_new_tokens=24, block_length=8, attention=attention, cache=cache, policy=policy)
    batch = prompts(5, 380, seed=11, max_len=40)
    alone = [generate(model, [p], cfg, max_batch=1)[0].tokens for p in batch]
    together = generate(model, batch, cfg, max_batch=3)  # 5 requests, 3 rows: two rows are refilled
    assert [r.tokens for r in together] == alone


def test_approx_cache_refreshing_every_step_equals_no_cache(llada_tiny):
    """With one step per block every step is a refresh, so approx is exactly the uncached sampler."""
    for p in prompts(3, 500, seed=5):
        out = {c: generate(llada_tiny, [p], reference_config("full", 4, 16, 1) if c == "none" else
                           SamplingConfig(max_new_tokens=16, block_length=4, attention="full", cache="approx",
                                          policy=FixedSteps(1), stop_at_eos=False))[0].tokens for c in ("none", "approx")}
        assert out["none"] == out["approx"]


def test_approx_cache_on_block_attention_is_exact(llada2_tiny):
    cfg = dict(max_new_tokens=24, block_length=8, attention="block", policy=Threshold(0.3, 8))
    for p in prompts(3, 380, seed=9):
        assert (generate(llada2_tiny, [p], SamplingConfig(cache="approx", **cfg))[0].tokens
                == generate(llada2_tiny, [p], SamplingConfig(cache="none", **cfg))[0].tokens)


# -- per-row settings and seeds -------------------------------------------------------------------

ROW_SETTINGS = [  # greedy rows under three policies, sampled rows with top-k / top-p / bans
    RowSettings(policy=Threshold(0.3, 8)),
    RowSettings(policy=FixedSteps(4)),
    RowSettings(policy=Factor(1.0, 8), ban_ids=(3, 5, 7)),
    RowSettings(temperature=0.8, top_k=20, policy=Threshold(0.5, 8)),
    RowSettings(temperature=1.0, top_p=0.9, policy=FixedSteps(8)),
    RowSettings(temperature=1.3, top_k=50, top_p=0.8, policy=Threshold(0.9, 2), ban_ids=(11,)),
]


def test_rows_with_their_own_settings_equal_engines_with_those_settings(llada2_tiny):
    """Greedy rows with different policies in ONE batch give what an engine with each row's
    SamplingConfig gives; seeded sampled rows what they give alone."""
    base = dict(max_new_tokens=24, block_length=8, attention="block", cache="exact")
    batch = prompts(len(ROW_SETTINGS), 380, seed=21, max_len=30)
    news = [24, 16, 9, 24, 13, 20]
    reqs = [Request(p, max_new_tokens=m, settings=s, seed=i) for i, (p, m, s) in enumerate(zip(batch, news, ROW_SETTINGS))]
    together = BatchEngine(llada2_tiny, SamplingConfig(**base), max_batch=4).run(reqs)
    for i, (p, m, s) in enumerate(zip(batch, news, ROW_SETTINGS)):
        cfg = SamplingConfig(**{**base, "max_new_tokens": m}, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                             policy=s.policy, ban_ids=s.ban_ids)
        alone = BatchEngine(llada2_tiny, cfg, max_batch=1).run([Request(p, seed=i)])[0]
        assert together[i].tokens == alone.tokens, i
        assert len(alone.tokens) <= m and not set(alone.tokens) & set(s.ban_ids)


def test_a_seeded_request_gives_the_same_answer_whatever_shares_its_batch(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=24, block_length=8, attention="block", cache="exact")
    p = prompts(1, 380, seed=23)[0]
    mine = RowSettings(temperature=1.0, top_p=0.95, policy=Threshold(0.7, 8))
    alone = generate(llada2_tiny, [Request(p, settings=mine, seed=7)], cfg)[0].tokens
    others = [Request(q, settings=s) for q, s in zip(prompts(5, 380, seed=29), ROW_SETTINGS[1:])]  # unseeded
    mixed = generate(llada2_tiny, others[:2] + [Request(p, settings=mine, seed=7)] + others[2:], cfg, max_batch=4)
    assert mixed[2].tokens == alone
    other_seed = generate(llada2_tiny, [Request(p, settings=mine, seed=8)], cfg)[0].tokens
    assert len(alone) > 0 and other_seed != alone  # the seed matters (a 380-token vocabulary at temperature 1)


def test_row_sampling_filters_by_hand():
    """top-k 1 and a tiny top-p are the argmax; bans never appear; a tiny temperature is greedy, not NaN."""
    model = MockModel(lambda x, pos: torch.linspace(0, 3, V).expand(*x.shape, V).clone())  # token V-1 best
    cfg = SamplingConfig(max_new_tokens=8, block_length=4, cache="none", policy=FixedSteps(4), stop_at_eos=False)
    settings = [RowSettings(temperature=1.0, top_k=1, policy=FixedSteps(4)),
                RowSettings(temperature=1.0, top_p=1e-6, policy=FixedSteps(4)),
                RowSettings(temperature=1e-300, policy=FixedSteps(4)),
                RowSettings(temperature=5.0, ban_ids=tuple(range(V - 1)), policy=FixedSteps(4)),
                RowSettings(ban_ids=(V - 1, MASK), policy=FixedSteps(4))]
    out = generate(model, [Request([1], settings=s, seed=i) for i, s in enumerate(settings)], cfg)
    assert [r.tokens for r in out[:4]] == [[V - 1] * 8] * 4
    assert out[4].tokens == [V - 3] * 8  # V - 2 is the mask id


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature must be"), (dict(temperature=float("nan")), "temperature must be"),
    (dict(top_p=0.0), "top_p must be"), (dict(top_k=-2), "top_k must be"), (dict(policy="threshold"), "policy must be"),
])
def test_bad_row_settings_say_what(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RowSettings(**kwargs)


def test_bad_request_settings_and_seed_say_what():
    engine = BatchEngine(MockModel(confident(lambda p: 3, 0.9)), SamplingConfig(max_new_tokens=8, block_length=4))
    with pytest.raises(ValueError, match="ban_ids hold ids outside"):
        engine.add(Request([1], settings=RowSettings(ban_ids=(V,))))
    with pytest.raises(ValueError, match="seed must be an integer"):
        engine.add(Request([1], seed="x"))
    with pytest.raises(ValueError, match="settings must be a RowSettings"):
        engine.add(Request([1], settings={"temperature": 1.0}))


# -- policies and adaptive length with mock models --------------------------------------------------

class MockModel(torch.nn.Module):
    """Logits from a function of (tokens, positions); counts forwards. Ignores the cache."""

    def __init__(self, logits_fn, attention="block", block_size=4):
        super().__init__()
        self.config = ModelConfig(vocab_size=V, hidden_size=8, n_layers=1, n_heads=1, intermediate_size=8,
                                  mask_id=MASK, eos_id=EOS, attention=attention, block_size=block_size,
                                  max_seq_len=256)
        self.logits_fn, self.calls = logits_fn, 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def forward(self, x, attention_mask=None, position_ids=None, kv_cache=None, logits_at=None):
        self.calls += 1
        logits = self.logits_fn(x, position_ids)
        if logits_at is not None:
            logits = logits.gather(1, logits_at[..., None].expand(-1, -1, V))
        return type("Out", (), {"logits": logits})()


def confident(token_at, p_high):
    """Position p predicts token_at(p) with probability p_high."""
    def fn(x, pos):
        logits = torch.full((*x.shape, V), float(torch.log(torch.tensor((1 - p_high) / (V - 1)))))
        tokens = torch.tensor([[token_at(int(q)) for q in row] for row in pos])
        logits.scatter_(-1, tokens[..., None], float(torch.log(torch.tensor(p_high))))
        return logits
    return fn


@pytest.mark.parametrize("cache", ["none", "exact"])
def test_threshold_one_commits_one_token_per_step(cache):
    model = MockModel(confident(lambda p: 3, 1.0 - 1e-9))
    cfg = SamplingConfig(max_new_tokens=12, block_length=4, cache=cache, policy=Threshold(1.0, 4))
    out = generate(model, [[1, 2, 4, 5]], cfg)[0]
    assert out.tokens == [3] * 12 and out.forwards == 12 and model.calls == 12


def test_threshold_commits_everything_confident_in_one_step():
    model = MockModel(confident(lambda p: 3, 0.99))
    out = generate(model, [[1, 2, 4, 5]], SamplingConfig(max_new_tokens=12, block_length=4, policy=Threshold(0.9, 4)))[0]
    assert out.tokens == [3] * 12 and out.forwards == 3


def test_stops_at_first_committed_eos_and_truncates():
    model = MockModel(confident(lambda p: EOS if p >= 7 else 3, 0.99))
    cfg = SamplingConfig(max_new_tokens=40, block_length=4, cache="exact", policy=Threshold(0.9, 4))
    out = generate(model, [[1, 2]], cfg)[0]
    assert out.tokens == [3] * 5 + [EOS] and out.finish_reason == "eos"
    assert out.forwards == 2  # blocks [0, 4) and [4, 8); the 8 later blocks are never decoded


def test_stops_within_a_block_once_nothing_is_masked_before_the_eos():
    # one token per step, most confident first: EOS at position 2 is committed first (p 0.99),
    # then position 1 (0.9): the row is done before the rest of the block is decoded
    def fn(x, pos):
        return confident(lambda p: EOS if p == 2 else 3, 0.99)(x, pos) * torch.where(pos == 2, 1.0, 0.5)[..., None]
    model = MockModel(fn)
    out = generate(model, [[1]], SamplingConfig(max_new_tokens=12, block_length=4, policy=FixedSteps(4)))[0]
    assert out.tokens == [3, EOS] and out.forwards == 2


def test_rows_finish_independently_and_free_their_slot():
    model = MockModel(confident(lambda p: EOS if p >= 6 else 3, 0.99))
    engine = BatchEngine(model, SamplingConfig(max_new_tokens=20, block_length=4, policy=Threshold(0.9, 4)), max_batch=2)
    ids = [engine.add(Request([1] * n)) for n in (1, 5, 2)]
    finished, steps = {}, 0
    while engine.busy:
        finished.update((r.id, r) for r in engine.step())
        steps += 1
        assert len(engine.rows) <= 2
    assert [finished[i].tokens for i in ids] == [[3] * 5 + [EOS], [3, EOS], [3] * 4 + [EOS]]


def test_top_k_mask_and_policies_by_hand():
    conf = torch.tensor([[0.5, 0.95, 0.2, 0.97, float("-inf")]])
    assert top_k_mask(conf, torch.tensor([2])).tolist() == [[False, True, False, True, False]]
    above = Threshold(0.9, 4).commit(conf, torch.tensor([1]))
    assert above.tolist() == [[False, True, False, True, False]]
    fallback = Threshold(0.96, 4).commit(conf, torch.tensor([2]))  # one above tau < 2 scheduled
    assert fallback.tolist() == [[False, True, False, True, False]]
    # factor 1: sorted 0.97, 0.95, 0.5: (2)(0.03)=.06 < 1, (3)(0.05)=.15 < 1, (4)(0.5)=2 -> n = 2
    assert Factor(1.0, 4).commit(conf, torch.tensor([1])).sum() == 2
    assert Factor(3.0, 4).commit(conf, torch.tensor([1])).sum() == 3
    assert FixedSteps(4).commit(conf, torch.tensor([3])).sum() == 3


def test_step_minimum_follows_the_schedule_and_finishes_the_block():
    assert transfer_schedule(torch.tensor([8]), 3)[0].tolist() == [3, 3, 2]
    step, masked = torch.tensor([0, 1, 2, 2]), torch.tensor([8, 1, 2, 5])
    assert step_minimum(8, torch.tensor([3] * 4), step, masked).tolist() == [3, 1, 2, 5]
    # per-row steps: 8 tokens over 5 steps = [2, 2, 2, 1, 1]; over 8 steps one a step
    steps, step, masked = torch.tensor([5, 5, 8, 8]), torch.tensor([2, 3, 0, 7]), torch.tensor([8, 8, 8, 3])
    assert step_minimum(8, steps, step, masked).tolist() == [2, 1, 1, 3]


# -- SPRINT ---------------------------------------------------------------------------------------

def test_sprint_keeping_everything_changes_nothing(llada2_tiny):
    cfg = dict(max_new_tokens=16, block_length=8, attention="block", cache="exact", policy=Threshold(0.3, 8))
    for p in prompts(2, 380, seed=13, max_len=40):
        plain = generate(llada2_tiny, [p], SamplingConfig(**cfg))[0].tokens
        kept = generate(llada2_tiny, [p], SamplingConfig(sprint=Sprint(keep_text=1.0), **cfg))[0].tokens
        assert kept == plain


def test_sprint_prunes_and_compacts_the_prompt_cache(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=16, block_length=8, attention="block", cache="exact",
                         policy=Threshold(0.3, 8), sprint=Sprint(keep_text=0.5, warmup=1))
    engine = BatchEngine(llada2_tiny, cfg, max_batch=1)
    engine.add(list(range(1, 35)))  # 34 tokens: 32 of them cached by the first forward
    engine.step()
    row = engine.rows[0]
    assert row.shift == 16  # half of the 32 cached prompt positions left the cache
    kept = engine.cache.slot_pos[0, :16]
    assert (kept >= 0).all() and (kept < 32).all() and (kept.diff() > 0).all()
    while engine.busy:
        results = engine.step()
    assert len(results[0].tokens) == 16


def test_sprint_cache_equals_dense_mask_hiding_the_pruned_positions(llada2_tiny):
    """After pruning, cached-block logits equal an uncached forward whose mask hides the pruned
    prompt positions from every query at or after the prune point (nothing else changes)."""
    bl = 8
    cfg = SamplingConfig(max_new_tokens=24, block_length=bl, attention="block", cache="exact",
                         policy=Threshold(0.2, bl), sprint=Sprint(keep_text=0.5, warmup=1))
    engine = BatchEngine(llada2_tiny, cfg, max_batch=1)
    records, forward = [], engine.forward

    def spy(tokens, **kwargs):
        row = engine.rows[0]
        canvas = engine.tokens[:1, : row.block + bl].clone()
        kept = set(engine.cache.slot_pos[0].tolist()) if row.shift else None
        out = forward(tokens, **kwargs)
        if kwargs.get("logits_at") is not None:  # after the prefill only the block reaches the head
            block_logits = out.logits
        else:
            at = (kwargs["position_ids"][0] == row.block).nonzero()[0, 0]
            block_logits = out.logits[:, at : at + bl]
        records.append((canvas, block_logits, row.cached, kept))
        return out

    engine.forward = spy
    engine.run([list(range(1, 30))])
    pruned_at, kept = next((cached, kept) for _, _, cached, kept in records if kept is not None)
    pruned = [p for p in range(pruned_at) if p not in kept]
    assert len(pruned) == pruned_at // 2
    for canvas, cached, _, kept_now in records:
        end = canvas.shape[1]
        mask = block_causal_mask(end, bl)[None, None].clone()
        if kept_now is not None:
            mask[0, 0, pruned_at:, pruned] = False
        with torch.no_grad():
            dense = llada2_tiny(canvas, attention_mask=mask).logits[:, end - bl :]
        assert (dense - cached).abs().max() < 1e-4


def test_sprint_keeps_a_ratio_per_modality():
    score = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2])
    image = torch.tensor([False, False, False, True, True, True])
    kept = keep_positions(score, image, Sprint(keep_text=2 / 3, keep_image=1 / 3))
    assert kept.tolist() == [1, 2, 4]


# -- documented errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(cache="bogus"), "valid cache modes: none, exact, approx"),
    (dict(cache="exact", attention="full"), "needs block-causal attention"),
    (dict(cache="approx", sprint=Sprint()), "needs cache 'exact'"),
    (dict(attention="causal"), "attention must be one of"),
    (dict(max_new_tokens=0), "must be positive"),
])
def test_bad_engine_config_says_what_and_why(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchEngine(MockModel(confident(lambda p: 3, 0.9)), SamplingConfig(**kwargs))


def test_bad_policy_and_requests_say_what_and_why():
    with pytest.raises(ValueError, match="valid policies: fixed, threshold, factor"):
        make_policy("greedy", steps=4)
    engine = BatchEngine(MockModel(confident(lambda p: 3, 0.9)), SamplingConfig(max_new_tokens=8, block_length=4))
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        engine.add([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add([V])
    with pytest.raises(ValueError, match="maximum sequence length"):
        engine.add(Request([1] * 250, max_new_tokens=8))


def test_temperature_sampling_is_reproducible_with_a_generator(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=16, block_length=8, attention="block", cache="exact",
                         policy=Threshold(0.5, 8), temperature=1.0, top_k=20, top_p=0.9)
    p = prompts(1, 380, seed=17)[0]
    runs = [generate(llada2_tiny, [p], cfg, generator=torch.Generator().manual_seed(0))[0].tokens for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) > 0 and 380 not in runs[0]


def test_progress_streams_the_committed_prefix_and_cancel_frees_the_row():
    model = MockModel(confident(lambda p: 3, 0.5))  # one token per step, most confident = leftmost
    engine = BatchEngine(model, SamplingConfig(max_new_tokens=8, block_length=4, policy=Threshold(0.9, 4)), max_batch=2)
    a, b = engine.add([1, 2, 4, 5]), engine.add([1, 2, 4, 5])
    queued = engine.add([1])
    engine.step()
    engine.step()
    assert engine.progress() == {a: [3, 3], b: [3, 3]}
    assert engine.cancel(b) and engine.cancel(queued) and not engine.cancel("nope")
    results = []
    while engine.busy:
        results += engine.step()
    assert [(r.id, r.tokens) for r in results] == [(a, [3] * 8)]


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "text-tiny"


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="models/text-tiny is not there")
def test_shipped_text_model_exact_cache_equals_uncached_and_answers():
    import omnidlm
    from omnidlm.data.synthetic import encode_example, heldout, score_exact
    from omnidlm.sequence.tokenizer import Tokenizer

    model, tok = omnidlm.load(SHIPPED), Tokenizer.from_file(SHIPPED)
    cfg = SamplingConfig(max_new_tokens=96, cache="exact", policy=Threshold(0.9, 32))
    examples = heldout(3)
    batch = [encode_example(m, a, tok)[0] for m, a in examples]
    results = generate(model, batch, cfg, max_batch=3)
    for prompt, (_, answer), result in zip(batch, examples, results):
        uncached = generate_llada2(model, prompt, gen_length=96, block_length=32, steps=32, threshold=0.9)
        assert result.tokens == uncached[0].tolist()
        assert score_exact(tok.decode(result.tokens), answer)
        assert result.forwards < 10  # ~3 blocks of ~80 tokens in a handful of forwards
