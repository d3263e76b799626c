"""The LLaDA2.0-Uni diffusion decoder on tiny configs: shapes at 2x, the null condition, CFG,
documented errors, the state-dict round trip, flow-matching training and 8-step distillation."""

import copy

import pytest
import torch

from omnidlm.data.digits import digit_images
from omnidlm.diffusion import flow
from omnidlm.models.latents import TINY_VAE
from omnidlm.models.uni_decoder import DIGITS_DECODER, UniDecoder
from omnidlm.sampling.image import decoder_latents, decoder_noise, decoder_sample
from omnidlm.train.uni_decoder import (DecoderTrain, distill, encode_all, flow_loss_on, standin_codes,
                                       train_decoder)

# 2x2 codes of 4x4 tokenizer pixels -> 16x16 output; TINY_VAE (downsample 2) -> 8x8 latents -> 4x4 tokens
TINY = dict(DIGITS_DECODER, codebook_size=40, grid=2, code_pixels=4, hidden_size=32, n_layers=2, n_heads=2,
            mlp_ratio=2, vae=dict(TINY_VAE))
TINY_TRAIN = DecoderTrain(steps=150, batch_size=32, lr=2e-3, warmup=10, ema_decay=0.0, student_steps=8,
                          teacher_substeps=4, teacher_cfg=3.0, bank_size=128, distill_steps=150,
                          distill_batch=32, distill_lr=1e-3, distill_ema=0.9)


def randomised(config: dict = TINY, seed: int = 0) -> UniDecoder:
    """A decoder whose zero-initialised output / modulation layers are random, so v depends on everything."""
    torch.manual_seed(seed)
    dec = UniDecoder(config).eval()
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return dec


@pytest.fixture(scope="module")
def digits():
    """64 real digits: stand-in codes of the 8x8 images, the 16x16 images as pixels in [-1, 1]."""
    small, labels = digit_images("train", 8)
    big, _ = digit_images("train", 16)
    pixels = torch.from_numpy(big[:64])[:, None].expand(-1, 3, -1, -1).contiguous() * 2 - 1
    return standin_codes(small[:64], labels[:64], grid=2, k=4), pixels, labels[:64]


@pytest.fixture(scope="module")
def trained(digits):
    codes, pixels, _ = digits
    torch.manual_seed(0)
    dec = UniDecoder(TINY)
    latents = encode_all(dec.vae, pixels)
    before = flow_loss_on(dec, codes, latents)
    stats = train_decoder(dec, codes, pixels, TINY_TRAIN)
    return dec, before, flow_loss_on(dec, codes, latents), stats


def test_shapes_at_twice_the_tokenizer_resolution():
    dec = randomised()
    codes = torch.randint(0, 40, (3, 2, 2))
    assert dec.image_size == 2 * 2 * 4 and dec.latent_shape == (4, 8, 8)
    assert dec.velocity(torch.randn(3, 4, 8, 8), torch.rand(3), codes).shape == (3, 4, 8, 8)
    images = decoder_sample(dec, codes, steps=2, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 16, 16) and images.min() >= 0 and images.max() <= 1
    # the condition grid sits at the centres of the 2x2 latent tokens each code covers (half-token units)
    digits_dec = UniDecoder(DIGITS_DECODER)
    assert (digits_dec.image_size, digits_dec.latent_shape, digits_dec.per_code) == (32, (4, 8, 8), 2)


def test_null_condition_is_used_without_codes():
    dec = randomised()
    x, t, codes = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.8]), torch.randint(0, 40, (2, 2, 2))
    v_null = dec.velocity(x, t, None)
    torch.testing.assert_close(v_null, dec.velocity(x, t, codes, keep=torch.tensor([False, False])))
    assert not torch.allclose(v_null, dec.velocity(x, t, codes))
    mixed = dec.velocity(x, t, codes, keep=torch.tensor([True, False]))
    torch.testing.assert_close(mixed[0], dec.velocity(x, t, codes)[0])
    torch.testing.assert_close(mixed[1], v_null[1])


def test_cfg_scale_one_is_the_conditional_sample_and_zero_the_unconditional():
    dec = randomised()
    codes, noise = torch.randint(0, 40, (2, 2, 2)), torch.randn(2, 4, 8, 8)
    by_hand = flow.euler_sample(lambda x, t: dec.velocity(x, t, codes), noise, steps=4, shift=6.0)
    torch.testing.assert_close(decoder_latents(dec, codes, noise, steps=4, cfg_scale=1.0), by_hand)
    uncond = decoder_latents(dec, None, noise, steps=4)
    torch.testing.assert_close(decoder_latents(dec, codes, noise, steps=4, cfg_scale=0.0), uncond, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(decoder_latents(dec, codes, noise, steps=4, cfg_scale=3.0), by_hand)


@pytest.mark.parametrize("codes, match", [
    (torch.full((1, 2, 2), 40), "codes must be in"),
    (torch.full((1, 2, 2), -1), "codes must be in"),
    (torch.zeros(1, 3, 3, dtype=torch.long), r"codes must be \(B, 2, 2\)"),
    (torch.zeros(2, 2, dtype=torch.long), r"codes must be \(B, 2, 2\)"),
    (torch.zeros(1, 2, 2), "integer"),
])
def test_bad_codes_raise(codes, match):
    with pytest.raises(ValueError, match=match):
        decoder_sample(randomised(), codes, steps=1)


def test_bad_config_and_latents_raise():
    with pytest.raises(ValueError, match="latent_channels"):
        UniDecoder(dict(TINY, latent_channels=8))
    with pytest.raises(ValueError, match="does not split"):
        UniDecoder(dict(TINY, code_pixels=1))
    with pytest.raises(ValueError, match="latents must be"):
        randomised().velocity(torch.randn(1, 4, 6, 6), 0.5, None)


def test_state_dict_round_trip():
    dec = randomised()
    dec.vae.register_to_config(scaling_factor=2.5, shift_factor=0.1)
    dec.load_vae(dec.vae)  # records the VAE's scale / shift in the config
    again = UniDecoder(dec.config)
    again.load_state_dict(dec.state_dict())
    assert again.config == dec.config and again.vae.config.scaling_factor == 2.5
    codes, noise = torch.randint(0, 40, (2, 2, 2)), torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(decoder_sample(again, codes, steps=3, noise=noise),
                               decoder_sample(dec, codes, steps=3, noise=noise))
    assert not any(k.endswith(("cond_pos", "latent_pos")) for k in dec.state_dict())  # derived, not stored


def test_standin_codes_carry_the_label(digits):
    codes, _, labels = digits
    assert codes.shape == (64, 2, 2) and codes.dtype == torch.long
    assert torch.equal(codes // 4, torch.as_tensor(labels)[:, None, None].expand(-1, 2, 2))


def test_short_training_lowers_the_flow_loss(trained):
    dec, before, after, stats = trained
    assert stats["steps"] == TINY_TRAIN.steps and not dec.training and not dec.vae.training
    assert after < 0.7 * before and stats["last_loss"] < stats["first_loss"]


def test_distilled_student_tracks_the_guided_teacher(trained, digits):
    teacher = trained[0]
    codes = digits[0]
    frozen = copy.deepcopy(teacher.state_dict())
    student, stats = distill(teacher, TINY_TRAIN, codes)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())  # the teacher is untouched
    assert student.config["steps"] == 8 and student.config["cfg_scale"] == 1.0
    assert stats["last_traj_loss"] < stats["first_traj_loss"]
    # fresh noise (not in the bank): the teacher's 32-step CFG solve is the reference
    g = torch.Generator().manual_seed(123)
    c, noise = codes[:48], decoder_noise(teacher, 48, g)
    reference = decoder_latents(teacher, c, noise, steps=32, cfg_scale=TINY_TRAIN.teacher_cfg)
    student_8 = decoder_latents(student, c, noise)  # its defaults: 8 steps, no CFG
    teacher_8 = decoder_latents(teacher, c, noise, steps=8, cfg_scale=1.0)
    mse_student = float((student_8 - reference).pow(2).mean())
    mse_teacher = float((teacher_8 - reference).pow(2).mean())
    assert mse_student < 0.5 * mse_teacher, (mse_student, mse_teacher)
