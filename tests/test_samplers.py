"""Sampler logic with mock models (fixed logits), and the documented argument errors."""

import pytest
import torch

from omnidlm.config import ModelConfig
from omnidlm.sampling.reference import generate, generate_llada2, transfer_schedule

V, MASK, EOS = 12, 10, 11


class ScriptedModel(torch.nn.Module):
    """Returns logits from a function of the input canvas; records every call's input."""

    def __init__(self, logits_fn, attention="block"):
        super().__init__()
        self.config = ModelConfig(vocab_size=V, hidden_size=8, n_layers=1, n_heads=1, intermediate_size=8,
                                  mask_id=MASK, eos_id=EOS, attention=attention, max_seq_len=256)
        self.logits_fn, self.calls = logits_fn, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, x, attention_mask=None):
        self.calls.append((x.clone(), attention_mask))
        return type("Out", (), {"logits": self.logits_fn(x)})()


def confident(token, p_high):
    """Every position predicts `token` with probability p_high (the rest spread evenly)."""
    def fn(x):
        logits = torch.full((*x.shape, V), 0.0)
        rest = (1 - p_high) / (V - 1)
        logits[..., :] = torch.log(torch.tensor(rest))
        logits[..., token] = torch.log(torch.tensor(p_high))
        return logits
    return fn


def test_transfer_schedule_spreads_remainder_first():
    assert transfer_schedule(torch.tensor([10, 3]), 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]


def test_llada2_commits_everything_above_threshold_in_one_step():
    model = ScriptedModel(confident(3, 0.99))
    out = generate_llada2(model, [1, 2], gen_length=6, block_length=4, steps=4, threshold=0.95)
    assert out[0].tolist() == [3] * 6
    assert len(model.calls) == 2  # one forward per block: all masked tokens clear the threshold


def test_llada2_falls_back_to_scheduled_top_k_below_threshold():
    model = ScriptedModel(confident(3, 0.5))
    generate_llada2(model, [1, 2, 4, 5], gen_length=4, block_length=4, steps=4, threshold=0.95)
    assert len(model.calls) == 4  # one token per step: the schedule of 4 tokens over 4 steps


def test_llada2_threshold_one_is_one_token_per_step():
    model = ScriptedModel(confident(3, 0.99))
    generate_llada2(model, [1, 2, 4, 5], gen_length=8, block_length=4, steps=4, threshold=1.0)
    assert len(model.calls) == 8


def test_llada2_stops_after_block_with_eos_and_cuts_after_it():
    model = ScriptedModel(confident(EOS, 0.99))
    out = generate_llada2(model, [1, 2], gen_length=12, block_length=4, steps=4, threshold=0.9)
    assert out[0].tolist() == [EOS]
    assert len(model.calls) == 1


def test_llada2_sees_block_causal_mask_and_window():
    model = ScriptedModel(confident(3, 0.99))
    generate_llada2(model, [1, 2, 4, 5, 6], gen_length=3, block_length=4, steps=4)
    x, mask = model.calls[0]
    assert x.shape == (1, 8) and mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, 0, 4:].sum() == 0 and mask[0, 0, 4:, :].all()


def test_llada_generate_commits_scheduled_count_per_step():
    model = ScriptedModel(confident(3, 0.6), attention="full")
    out = generate(model, [[1, 2]], steps=4, gen_length=8, block_length=4)
    assert out.tolist() == [[3] * 8] and len(model.calls) == 4
    masked_per_call = [int((x == MASK).sum()) for x, _ in model.calls]
    assert masked_per_call == [8, 6, 4, 2]


def test_llada_bans_apply_before_argmax():
    model = ScriptedModel(confident(EOS, 0.9), attention="full")
    out = generate(model, [[1, 2]], steps=2, gen_length=2, block_length=2, ban_ids=(EOS,))
    assert EOS not in out[0].tolist()


def test_llada_cfg_runs_conditional_and_unconditional_together():
    model = ScriptedModel(confident(3, 0.6), attention="full")
    generate(model, [[1, 2]], steps=1, gen_length=2, block_length=2, cfg_scale=1.0)
    x, _ = model.calls[0]
    assert x.shape[0] == 2 and x[1, :2].tolist() == [MASK, MASK]


def test_left_padded_batch_gets_attention_mask():
    model = ScriptedModel(confident(3, 0.6), attention="full")
    generate(model, [[1, 2, 4], [5]], steps=2, gen_length=2, block_length=2)
    x, mask = model.calls[0]
    assert x[1, :2].tolist() == [EOS, EOS] and mask[1].tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(gen_length=10, block_length=4, steps=4), "multiple of block_length"),
    (dict(gen_length=8, block_length=4, steps=3), "multiple of the number of blocks"),
    (dict(gen_length=8, block_length=4, steps=4, pad_id=MASK), "pad_id equals mask_id"),
    (dict(gen_length=300, block_length=300, steps=300), "maximum sequence length"),
    (dict(gen_length=8, block_length=4, steps=4, remasking="best"), "remasking"),
])
def test_bad_sampler_arguments_say_which_and_why(kwargs, message):
    model = ScriptedModel(confident(3, 0.6), attention="full")
    with pytest.raises(ValueError, match=message):
        generate(model, [[1, 2]], **kwargs)
