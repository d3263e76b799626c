"""Omni samplers on a tiny random model: understanding on the engine (the cached prefix against the
full forward, batched = alone = uncached, threshold decoding: top-1 at least, stop at EOS), text-to-image shapes, the CFG interval, bad inputs."""

import numpy as np
import pytest
import torch

from omnidlm.data import omni_batches as OB
from omnidlm.data.char_tokenizer import build_char_tokenizer
from omnidlm.sampling import image as I
from omnidlm.sampling.image import FlowSettings
from omnidlm.sampling import omni as S
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.train import omni as O

E = FlowSettings.euler  # settings for N Euler steps

TOK = Tokenizer(build_char_tokenizer())
CODEC = OB.PromptCodec(TOK)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return O.LLaDAO(O.model_config(O.digits_lladao_tiny())).eval()


@torch.no_grad()
def test_cached_prefix_block_logits_match_the_full_forward(model):
    """The engine's first block step (prefix prefilled into the KVCache) gives the logits of one
    forward over the whole understanding sample [head | image | question | block (full)]."""
    px = S.prepare_image(np.random.default_rng(0).random((16, 16)), 16)
    engine = S.understanding_engine(model, S.understanding_config(model, block_length=8), max_batch=1)
    seen, forward = [], engine.forward
    engine.forward = lambda *a, **kw: seen.append(forward(*a, **kw)) or seen[-1]
    prefix = S.image_question(model, CODEC, px, "What digit is shown?")
    engine.add(S.Request([], 8, prefix=prefix))
    engine.step()
    cached = seen[-1].logits[0]  # (8, V): the block's logits (the head runs on the block only)
    sample = OB.understanding_sample(CODEC, px, 16, "What digit is shown?", [model.config.llm.mask_id] * 8)
    batch = OB.collate([sample], 97)
    full = model(batch.input_ids, batch.layout, vit_images=batch.vit).logits[0, -8:]
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_answers_batch_as_they_run_alone_and_cached_equals_uncached(model):
    images = [np.random.default_rng(i).random((16, 16)) for i in range(3)] + [None]
    questions = ["What digit is shown?", "Describe it.", "What is it plus one?", "Hello?"]
    together = S.understand_many(model, TOK, images, questions, block_length=8, max_blocks=2, threshold=0.5)
    alone = [S.understand(model, TOK, im, q, block_length=8, max_blocks=2, threshold=0.5) for im, q in zip(images, questions)]
    assert [a.ids for a in together] == [a.ids for a in alone]
    cfg = S.understanding_config(model, block_length=8, threshold=0.5, max_blocks=2)
    uncached = S.BatchEngine(model.language_model, S.SamplingConfig(**{**cfg.__dict__, "cache": "none"}), 4)
    results, _ = S.run_recorded(uncached, S.understanding_requests(model, TOK, images, questions))
    eos = model.config.llm.eos_id
    assert [r.tokens[:-1] if r.tokens[-1:] == [eos] else r.tokens for r in results] == [a.ids for a in alone]


class Scripted(torch.nn.Module):
    """A language model stub: the logits of position j of a block come from `script(j, step)`;
    the prefill (embeddings in) runs the real model."""

    def __init__(self, real, script):
        super().__init__()
        self.real, self.script, self.calls = real, script, 0
        self.embed, self.config = real.embed, real.config

    device = property(lambda self: self.real.device)
    dtype = property(lambda self: self.real.dtype)

    def forward(self, ids=None, inputs_embeds=None, logits_at=None, **kw):
        if ids is None:
            return self.real(ids, inputs_embeds=inputs_embeds, logits_at=logits_at, **kw)
        self.calls += 1
        V = self.real.config.vocab_size
        logits = torch.zeros(1, logits_at.shape[1], V)
        for j in range(logits_at.shape[1]):
            token, conf = self.script(j, self.calls)
            logits[0, j, token] = conf
        return type("Out", (), {"logits": logits})()


def with_script(model, script):
    stub = Scripted(model.language_model, script)
    original = model.language_model
    model.language_model = stub
    return stub, original


def test_threshold_decoding_commits_confident_tokens_and_stops_at_eos(model):
    eos, a = model.config.llm.eos_id, TOK.encode("a")[0]
    # positions 0-2: 'a' very confident; 3: EOS confident; later: unsure
    script = lambda j, step: (a, 20.0) if j < 3 else ((eos, 20.0) if j == 3 else (a, 0.0))
    stub, original = with_script(model, script)
    try:
        ans = S.understand(model, TOK, np.zeros((16, 16)), "Q?", block_length=16, record=True)
    finally:
        model.language_model = original
    assert ans.text == "aaa" and ans.ids == [a, a, a]
    assert ans.iterations == 1 and stub.calls == 1  # settled in one iteration: EOS with nothing masked before it
    assert len(ans.history) == 1


def test_at_least_top1_per_iteration_and_block_append(model):
    eos, b = model.config.llm.eos_id, TOK.encode("b")[0]
    # nothing is confident: one token per iteration, most confident (lowest position) first; no EOS in block 1
    script = lambda j, step: (b, 1.0 - j * 0.01) if step <= 8 else (eos, 1.0 - j * 0.01)
    stub, original = with_script(model, script)
    try:
        ans = S.understand(model, TOK, np.zeros((16, 16)), "Q?", block_length=8, threshold=0.99, record=True)
    finally:
        model.language_model = original
    assert ans.ids == [b] * 8  # block 1 filled one token per iteration; block 2 starts with EOS
    assert ans.iterations == 9
    masks = [sum(t == model.config.llm.mask_id for t in h) for h in ans.history[:8]]
    assert masks == list(range(7, -1, -1))


def test_understand_bad_inputs(model):
    with pytest.raises(ValueError, match="empty"):
        S.understand(model, TOK, np.zeros((16, 16)), "  ")
    with pytest.raises(ValueError, match="grayscale"):
        S.understand(model, TOK, np.zeros((16, 16, 3, 2)), "Q?")


def test_draw_shapes_and_determinism(model):
    a = I.draw_lladao(model, TOK, ["a handwritten digit 3", "a handwritten digit 4"], n=2, settings=E(3), seed=1)
    b = I.draw_lladao(model, TOK, ["a handwritten digit 3", "a handwritten digit 4"], n=2, settings=E(3), seed=1)
    assert a.shape == (4, 16, 16) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)


def test_text_cfg_only_inside_the_interval(model, monkeypatch):
    seen = []
    real = I._Rows.velocity

    def spy(self, m, x, t):
        seen.append((t, self.batch.input_ids.shape[1] < 50))  # the empty prompt is the short row
        return real(self, m, x, t)

    monkeypatch.setattr(I._Rows, "velocity", spy)
    I.draw_lladao(model, TOK, ["a handwritten digit 3"], settings=E(10, cfg_text_scale=3.0, cfg_interval=(0.4, 1.0)))
    uncond_t = [t for t, un in seen if un]
    cond_t = [t for t, un in seen if not un]
    assert len(cond_t) == 10 and 0 < len(uncond_t) < 10
    assert all(0.4 < t <= 1.0 for t in uncond_t)
    seen.clear()
    I.draw_lladao(model, TOK, ["a handwritten digit 3"], settings=E(4, cfg_text_scale=1.0))
    assert not any(un for _, un in seen)


def test_editing_uses_the_image_branch(model, monkeypatch):
    calls = []
    real = I._Rows.velocity
    monkeypatch.setattr(I._Rows, "velocity", lambda self, m, x, t: calls.append(len(self.batch.vit)) or real(self, m, x, t))
    out = I.draw_lladao(model, TOK, ["the digit plus one"], settings=E(2, cfg_text_scale=2.0, cfg_img_scale=2.0),
                        image=np.zeros((16, 16)))
    assert out.shape == (1, 16, 16)
    # both steps (t = 1, 0.75) are inside the interval: conditional and text-unconditional rows with the
    # image, the image-unconditional row without it
    assert calls.count(1) == 4 and calls.count(0) == 2
    calls.clear()  # as published, image CFG acts only together with text CFG
    I.draw_lladao(model, TOK, ["the digit plus one"], settings=E(2, cfg_text_scale=1.0, cfg_img_scale=2.0),
                  image=np.zeros((16, 16)))
    assert calls == [1, 1]


def test_draw_refuses_models_without_generation_and_empty_prompts(model):
    cfg = O.model_config(O.digits_lladao_tiny())
    cfg.vae = None
    und_only = O.LLaDAO(cfg)
    with pytest.raises(ValueError, match="no generation expert"):
        I.draw_lladao(und_only, TOK, ["a handwritten digit 3"], settings=E(1))
    with pytest.raises(ValueError, match="empty"):
        I.draw_lladao(model, TOK, [""], settings=E(1))
