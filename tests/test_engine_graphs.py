"""Block steps at fixed bucket shapes (`BatchEngine(..., graphs=True)`, sampling/graphs.py).

On the CPU a bucket's step runs eagerly, so these tests check what a CUDA graph would replay: the
padded rows, queries and key slots change no token of any request (rows joining and leaving, the
exact and the approximate cache, a dense and a MoE model, SPRINT), every block step runs at a
bucket's shapes, the static cache never moves, and a bucket step reads nothing back to the host
(it traces as one graph). The capture itself needs a GPU (scripts/gpu_bench.sh)."""

import pytest
import torch

from omnidlm import systems
from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig
from omnidlm.sampling.graphs import StepGraphs, _capturable
from omnidlm.sampling.policies import Threshold
from omnidlm.sampling.sprint import Sprint

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33], [40, 41, 42],
           [7] * 20, [9, 9, 9, 9, 9], [50, 51], [60] * 9]  # seven requests, four rows: rows join and leave
BL, WIDTH_STEP = 16, 32


@pytest.fixture(scope="module")
def text_tiny():
    return systems.open("models/text-tiny").model.eval()


def _config(cache, attention, **extra):
    return SamplingConfig(max_new_tokens=48, block_length=BL, attention=attention, cache=cache,
                          policy=Threshold(0.9, 4), stop_at_eos=False, **extra)


def _run(model, cfg, graphs: bool, prompts=PROMPTS, max_batch: int = 4, width_step: int = WIDTH_STEP):
    """-> (tokens per request, (batch, queries, width) of every cached forward, the engine)."""
    engine = BatchEngine(model, cfg, max_batch=max_batch, graphs=graphs)
    if graphs:
        engine.graphs.width_step = width_step  # WIDTH_STEP: several width buckets within text-tiny's answers
    shapes = []

    def record(_module, args, kwargs):
        x = args[0] if args and args[0] is not None else kwargs["inputs_embeds"]
        shapes.append((x.shape[0], x.shape[1], kwargs["kv_cache"].width))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            tokens = [r.tokens for r in engine.run([Request(p) for p in prompts])]
    finally:
        handle.remove()
    return tokens, shapes, engine


def _is_bucket(shape, length: int) -> bool:
    rows, queries, width = shape
    return rows & (rows - 1) == 0 and queries % BL == 0 and (width % WIDTH_STEP == 0 or width == length)


@pytest.mark.parametrize("cache, attention", [("exact", "block"), ("approx", "full")])
def test_bucket_steps_give_the_tokens_of_the_unpadded_engine(text_tiny, cache, attention):
    eager, eager_shapes, _ = _run(text_tiny, _config(cache, attention), graphs=False)
    bucketed, shapes, engine = _run(text_tiny, _config(cache, attention), graphs=True)
    assert bucketed == eager and all(len(t) == 48 for t in eager)
    steps = [s for s in shapes if s[1] <= 2 * BL]
    assert steps and all(_is_bucket(s, engine.cache.length) for s in steps)
    assert set(shapes) != set(eager_shapes)  # some steps were padded: the padding was exercised


def test_bucket_steps_of_a_moe_model_with_sprint(llada2_tiny):
    cfg = SamplingConfig(max_new_tokens=24, block_length=8, attention="block", cache="exact",
                         policy=Threshold(0.3, 8), sprint=Sprint(keep_text=0.5, warmup=1))
    prompts = [list(range(1, 35)), list(range(40, 51)), list(range(3, 9))]
    eager, _, _ = _run(llada2_tiny, cfg, graphs=False, prompts=prompts)
    bucketed, _, engine = _run(llada2_tiny, cfg, graphs=True, prompts=prompts)
    assert bucketed == eager
    assert not _capturable(llada2_tiny)  # its expert dispatch reads the host: eager on a GPU too


def test_the_static_cache_never_moves_and_refuses_what_it_cannot_hold(text_tiny):
    engine = BatchEngine(text_tiny, _config("exact", "block"), max_batch=2, graphs=True, max_length=96)
    addresses = [t.data_ptr() for t in engine.cache.k + engine.cache.v]
    with torch.no_grad():
        engine.run([Request(p) for p in PROMPTS[:3]])
    assert [t.data_ptr() for t in engine.cache.k + engine.cache.v] == addresses
    with pytest.raises(ValueError, match="static cache holds 96 \\(max_length\\)"):
        engine.add(Request(list(range(1, 60))))  # 59 + 48 tokens: 112 positions in whole blocks
    default = BatchEngine(text_tiny, _config("approx", "full"), max_batch=1, graphs=True)
    longest = Request(list(range(1, 11)), max_new_tokens=text_tiny.config.max_seq_len - 10)
    default.add(longest)  # every request the model takes fits, its canvas rounded up to whole blocks
    with pytest.raises(ValueError, match='needs SamplingConfig.cache "exact" or "approx"'):
        BatchEngine(text_tiny, _config("none", "full"), graphs=True)


def test_buckets_round_rows_queries_and_width_up():
    graphs = StepGraphs(torch.nn.Linear(1, 1), max_batch=6, block=16, width_step=32)
    assert graphs.bucket(3, 16, 40, length=200) == (4, 16, 64)
    assert graphs.bucket(5, 20, 195, length=200) == (6, 32, 200)  # capped at max_batch and the cache length
    assert graphs.bucket(1, 33, 40, length=200) is None  # three blocks of queries: a prefill, eager
    assert not graphs.capture  # no CUDA device: steps run eagerly


def test_a_bucket_step_reads_nothing_back_to_the_host(text_tiny, llada2_tiny, monkeypatch):
    """What a CUDA graph needs of the step it captures, checked on the CPU: every bucket step traces
    as ONE graph (torch.compile fullgraph=True, eager backend), which fails on any host read
    (.item(), .tolist(), a branch on a tensor's value). The MoE dispatch reads its token counts
    on the host, so its steps fail to trace: that is why `_capturable` keeps MoE models eager."""
    traced = []

    def run_traced(self, key, fn, *tensors):
        traced.append(key)
        return torch.compile(fn, fullgraph=True, backend="eager", dynamic=False)(*tensors)

    monkeypatch.setattr(StepGraphs, "run", run_traced)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 64)  # one trace per bucket and engine
    torch._dynamo.reset()
    try:
        for cache, attention in (("exact", "block"), ("approx", "full")):  # two blocks of two steps
            cfg = SamplingConfig(max_new_tokens=32, block_length=BL, attention=attention, cache=cache,
                                 policy=Threshold(0.9, 2), stop_at_eos=False)
            tokens, _, _ = _run(text_tiny, cfg, graphs=True, prompts=PROMPTS[:3], width_step=256)
            assert tokens == _run(text_tiny, cfg, graphs=False, prompts=PROMPTS[:3])[0]
        assert len(set(traced)) >= 2  # buckets of one and two blocks of queries
        assert _capturable(text_tiny)
        cfg = SamplingConfig(max_new_tokens=8, block_length=8, attention="block", cache="exact", policy=Threshold(0.3, 8))
        with pytest.raises(Exception, match="tolist"):
            _run(llada2_tiny, cfg, graphs=True, prompts=[list(range(1, 12))])
    finally:
        torch._dynamo.reset()


def test_bucket_steps_after_a_multimodal_prefix():
    """LLaDA-o's image questions (ViT prefixes prefilled eagerly, block steps at bucket shapes after
    them): the answers of the unpadded engine, for five questions through four rows."""
    from omnidlm.data.digits import digit_images
    from omnidlm.sampling import omni as O

    loaded = systems.open("models/lladao-digits")
    model, tok = loaded.model, loaded.tokenizer
    images = list(digit_images("heldout", 32)[0][:5])
    questions = ["Describe the image.", "What digit is shown?", "What is the digit plus 2?",
                 "What digit is shown?", "Describe the image."]
    answers = {}
    for graphs in (False, True):
        engine = BatchEngine(model.language_model, O.understanding_config(model), max_batch=4, graphs=graphs)
        with torch.no_grad():
            answers[graphs] = [r.tokens for r in engine.run(O.understanding_requests(model, tok, images, questions))]
    assert answers[True] == answers[False] and all(answers[False])
