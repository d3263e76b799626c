"""Omni training on tiny tensors: packing of mixed samples, condition dropout, the combined loss,
adaptive length with block padding, and a seconds-long run of the digits recipe saved and reloaded."""

import dataclasses
import random

import pytest
import torch

from omnidlm import systems
from omnidlm.data import omni_batches as OB
from omnidlm.data.char_tokenizer import build_char_tokenizer
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.train import omni as O

TOK = Tokenizer(build_char_tokenizer())
CODEC = OB.PromptCodec(TOK)
EOS = TOK.token_id("<|endoftext|>")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = O.digits_lladao_tiny()
    return cfg, O.LLaDAO(O.model_config(cfg))


def mixed_samples(n_vit=16, n_vae=16):
    g = torch.Generator().manual_seed(0)
    und = OB.understanding_sample(CODEC, torch.rand(3, 16, 16, generator=g) * 2 - 1, n_vit, "What digit is shown?",
                                  CODEC.answer("seven") + [EOS])
    gen = OB.generation_sample(CODEC, "a handwritten digit 7", torch.randn(4, 8, 8, generator=g), n_vae)
    edit = OB.generation_sample(CODEC, "the next digit", torch.randn(4, 8, 8, generator=g), n_vae,
                                torch.zeros(3, 16, 16), torch.ones(4, 8, 8), n_vit)
    return und, gen, edit


def test_collate_packs_documents_and_marks_answers():
    und, gen, edit = mixed_samples()
    batch = OB.collate([und, gen, gen, edit], EOS, capacity=200)
    B, L = batch.input_ids.shape
    assert B < 4 and L <= 200  # documents share rows
    assert int(batch.answer_mask.sum()) == 6  # "seven" + EOS
    answer = batch.input_ids[batch.answer_mask].tolist()
    assert TOK.decode(answer) == "seven"
    assert len(batch.vit) == 2 and len(batch.targets) == 3 and len(batch.clean_latents) == 1
    # documents never see each other
    mask = batch.layout.mask[:, 0]
    docs = batch.doc_ids
    cross = (docs[:, :, None] != docs[:, None, :])
    assert not (mask & cross).any()


def test_latents_in_order_interleaves_conditions_first():
    _, gen, edit = mixed_samples()
    batch = OB.collate([edit, gen], EOS)
    noisy = [torch.full((4, 8, 8), 7.0), torch.full((4, 8, 8), 9.0)]
    latents, flags = OB.latents_in_order(batch, noisy)
    assert flags == [False, True, True]
    assert latents[0].eq(1).all() and latents[1].eq(7).all() and latents[2].eq(9).all()


def test_condition_dropout_probabilities():
    rng = random.Random(0)
    p = OB.Dropout(text=1.0, vit=1.0, vae=1.0)
    assert OB.drop_conditions("x", 1, 2, p, rng) == ("", None, None)
    assert OB.drop_conditions("x", 1, 2, OB.Dropout(0, 0, 0), rng) == ("x", 1, 2)
    p = OB.Dropout()  # LLaDA-o: text 0.1, ViT 0.3, VAE 0.3
    draws = [OB.drop_conditions("x", 1, 2, p, rng) for _ in range(4000)]
    assert abs(sum(d[0] == "" for d in draws) / 4000 - 0.1) < 0.02
    assert abs(sum(d[1] is None for d in draws) / 4000 - 0.3) < 0.03
    assert abs(sum(d[2] is None for d in draws) / 4000 - 0.3) < 0.03


def test_answer_lengths_vary_and_pad_to_the_block():
    cfg = dataclasses.replace(O.digits_lladao_tiny(), p_ext=0.0, p_trunc=0.0, p_pad_block=1.0)
    data = O.DigitsOmniData(cfg, torch.zeros(1, 3, 16, 16), [7], torch.zeros(1, 4, 8, 8), CODEC)
    ids = data.answer_ids("seven", random.Random(0))
    assert len(ids) == 32 and ids[:5] == CODEC.answer("seven") and set(ids[5:]) == {EOS}
    cfg = dataclasses.replace(cfg, p_pad_block=0.0, p_trunc=1.0)
    data.cfg = cfg
    long = "The digit is 7, and 7 plus 3 is 10."
    cut = data.answer_ids(long, random.Random(1))
    assert EOS not in cut and len(cut) < len(long)  # a truncated answer has no EOS


def test_omni_loss_combines_weighted_ce_and_mse(tiny):
    cfg, model = tiny
    und, gen, _ = mixed_samples()
    batch = OB.collate([und, gen], EOS, capacity=0)
    out = O.omni_losses(model, batch, cfg, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["ce"] > 0 and out["mse"] > 0
    assert out["loss"].item() == pytest.approx(0.25 * out["ce"] + 1.0 * out["mse"], rel=1e-5)
    out["loss"].backward()
    assert model.llm2vae.weight.grad is not None and model.connector.fc1.weight.grad is not None
    assert all(p.grad is None for p in model.vae.parameters())  # the VAE is frozen
    model.zero_grad(set_to_none=True)


def test_only_generation_batch_has_zero_ce(tiny):
    cfg, model = tiny
    _, gen, _ = mixed_samples()
    out = O.omni_losses(model, OB.collate([gen], EOS), cfg, torch.Generator().manual_seed(0))
    assert out["ce"] == 0.0 and out["mse"] > 0


def test_tiny_recipe_runs_saves_and_loads(tmp_path):
    cfg = O.digits_lladao_tiny()
    model, summary = O.train_omni(cfg, tmp_path / "m", progress=False)
    assert summary["steps"] == cfg.steps and summary["recipe"] == "digits-lladao-tiny"
    assert (tmp_path / "m" / "ema.safetensors").exists() and (tmp_path / "m" / "tokenizer.json").exists()
    loaded = systems.open(tmp_path / "m").model
    assert loaded.can_see and loaded.can_draw
    # the VAE's fitted scale / shift survive the round trip
    assert loaded.config.vae["scaling_factor"] == pytest.approx(model.config.vae["scaling_factor"])
    for name, t in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], t, msg=name)


def test_affine_augment_identity_and_background():
    g = torch.Generator().manual_seed(0)
    px = torch.rand(3, 16, 16, generator=g) * 2 - 1
    same = OB.affine_image(px, random.Random(0), 0.0, 0.0, 0.0)  # no rotation, zoom or shift
    assert torch.allclose(same, px, atol=1e-5)
    out = OB.affine_image(torch.full((3, 16, 16), -1.0), random.Random(1))  # black stays black
    assert out.shape == (3, 16, 16) and torch.allclose(out, torch.full_like(out, -1.0), atol=1e-5)


def test_batched_vit_embedding_matches_one_image_at_a_time(tiny):
    _, model = tiny
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 16, 16, generator=g) * 2 - 1 for _ in range(3)] + [torch.rand(3, 8, 8, generator=g)]
    together = model.embed_images(images)  # two sizes: grouped by shape, order kept
    for img, emb in zip(images, together):
        assert torch.allclose(model.embed_images([img])[0], emb, atol=1e-5)


def test_recipe_vision_lr_and_understanding_warmup():
    cfg = dataclasses.replace(O.digits_lladao_tiny(), vision_lr_mult=3.0, und_warmup=2, gen_fraction=0.5)
    model = O.LLaDAO(O.model_config(cfg))
    opt = O.omni_loop(model, cfg).optimizer
    vision = {id(p) for n, p in model.named_parameters() if n.startswith(("vit.", "connector."))}
    for group in opt.param_groups:
        assert group["lr_mult"] == (3.0 if id(group["params"][0]) in vision else 1.0)
        assert all((id(p) in vision) == (group["lr_mult"] == 3.0) for p in group["params"])
    pixels, latents = torch.rand(6, 3, 16, 16) * 2 - 1, torch.randn(6, 4, 8, 8)
    data = O.DigitsOmniData(cfg, pixels, [0, 1, 2, 3, 4, 5], latents, CODEC)
    assert len(data.batch(0).targets) == 0 and len(data.batch(2).targets) == round(cfg.batch_size * 0.5)
