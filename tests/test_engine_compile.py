"""The compiled step (`BatchEngine(..., compile=True)`, torch.compile with inductor) on the CPU gives
the tokens of the eager engine, for the exact cache (block layout) and the approximate cache (full
layout), on the shipped models/text-tiny. One compile per layout: a batch of two prompts of unequal
lengths (padded forwards, every width of the answer), both rows active to the end. And the compiled
forward at the bucket shapes of `graphs=True` (on a GPU, what each CUDA graph captures). Inductor's
CPU backend builds C++ (g++, as on CI)."""

import pytest
import torch

from omnidlm import systems
from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig
from omnidlm.sampling.policies import Threshold

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]]


@pytest.fixture(scope="module")
def text_tiny():
    return systems.open("models/text-tiny").model.eval()


def _tokens(model, cache: str, attention: str, compile: bool, graphs: bool = False) -> list[list[int]]:
    cfg = SamplingConfig(max_new_tokens=48, block_length=16, attention=attention, cache=cache,
                         policy=Threshold(0.9, 4), stop_at_eos=False)
    engine = BatchEngine(model, cfg, max_batch=2, compile=compile, graphs=graphs)
    with torch.no_grad():
        return [r.tokens for r in engine.run([Request(p) for p in PROMPTS])]


@pytest.mark.parametrize("cache, attention", [("exact", "block"), ("approx", "full")])
def test_compiled_step_on_the_cpu_gives_the_eager_tokens(text_tiny, cache, attention):
    torch._dynamo.reset()
    eager = _tokens(text_tiny, cache, attention, compile=False)
    assert _tokens(text_tiny, cache, attention, compile=True) == eager
    assert all(len(t) == 48 for t in eager)


def test_compiled_bucket_steps_on_the_cpu_give_the_eager_tokens(text_tiny):
    torch._dynamo.reset()
    eager = _tokens(text_tiny, "exact", "block", compile=False)
    assert _tokens(text_tiny, "exact", "block", compile=True, graphs=True) == eager
