"""Rectified flow: schedule, noising and loss against hand computation; the Euler ODE on known
velocity fields; classifier-free guidance interval and norm re-scaling."""

import math

import pytest
import torch

from omnidlm.diffusion import flow


def test_shift_and_logit_normal_t():
    assert flow.shift_t(torch.tensor(0.5), 4.0).item() == pytest.approx(2.0 / 2.5)
    assert flow.shift_t(torch.tensor([0.0, 1.0]), 3.0).tolist() == [0.0, 1.0]
    t = flow.sample_t(5, shift=4.0, generator=torch.Generator().manual_seed(3))
    z = torch.randn(5, generator=torch.Generator().manual_seed(3))
    s = torch.sigmoid(z)
    torch.testing.assert_close(t, 4 * s / (1 + 3 * s))


def test_noising_target_and_loss_by_hand():
    x0 = torch.tensor([[1.0, -1.0]])
    eps = torch.tensor([[3.0, 1.0]])
    xt, target = flow.noise_latents(x0, torch.tensor([0.25]), eps)
    assert xt.tolist() == [[0.75 * 1 + 0.25 * 3, 0.75 * -1 + 0.25 * 1]]
    assert target.tolist() == [[2.0, 2.0]]
    v = torch.tensor([[1.0, 4.0]])
    assert flow.flow_loss(v, target).item() == pytest.approx(((1 - 2) ** 2 + (4 - 2) ** 2) / 2)


def test_timestep_grid():
    assert flow.timesteps(2, shift=1.0).tolist() == [1.0, 0.5, 0.0]
    assert flow.timesteps(2, shift=3.0).tolist() == pytest.approx([1.0, 0.75, 0.0])
    with pytest.raises(ValueError, match="steps"):
        flow.timesteps(0)


def test_euler_constant_velocity_lands_on_x1_minus_v():
    x1, v = torch.randn(2, 3), torch.randn(2, 3)
    x0 = flow.euler_sample(lambda x, t: v, x1, steps=7, shift=3.0)
    torch.testing.assert_close(x0, x1 - v)


def test_euler_on_the_true_straight_path_velocity_is_exact():
    # along x_t = (1 - t) x0 + t eps the velocity is (x_t - x0) / t: Euler steps stay on the line
    target, x1 = torch.randn(4), torch.randn(4)
    out = flow.euler_sample(lambda x, t: (x - target) / t, x1, steps=5, shift=3.0, progress=True)
    torch.testing.assert_close(out, target, rtol=1e-5, atol=1e-5)


def test_cfg_interval_and_renorm_by_hand():
    v_cond, v_un = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    # outside (0.4, 1.0]: no guidance; compared in float32 like the published grid (float32 0.4 is not > 0.4)
    assert not flow.in_interval(0.4, (0.4, 1.0)) and not flow.in_interval(float(torch.tensor(0.4)), (0.4, 1.0))
    assert flow.in_interval(1.0, (0.4, 1.0)) and flow.in_interval(0.5, (0.4, 1.0))
    # 4 * v_cond has norm 20 > 5, re-scaled back to norm 5
    torch.testing.assert_close(flow.cfg_velocity(v_cond, v_un, text_scale=4.0), v_cond)
    torch.testing.assert_close(flow.cfg_velocity(v_cond, v_un, text_scale=4.0, renorm_type="none"), 4 * v_cond)
    # the re-scaling factor is clamped below at renorm_min
    torch.testing.assert_close(flow.cfg_velocity(v_cond, v_un, text_scale=4.0, renorm_min=0.5), 2 * v_cond)
    # a guided norm below the conditional one is left alone (scale clamped at 1)
    v_cond, v_un = torch.tensor([[2.0, 2.0]]), torch.tensor([[3.0, 3.0]])
    torch.testing.assert_close(flow.cfg_velocity(v_cond, v_un, text_scale=2.0), torch.tensor([[1.0, 1.0]]))
    # text scale <= 1: no guidance at all, as published
    assert torch.equal(flow.cfg_velocity(v_cond, v_un, text_scale=1.0, v_img_uncond=v_un, img_scale=3.0), v_cond)
    with pytest.raises(ValueError, match="renorm type"):
        flow.cfg_velocity(v_cond, v_un, text_scale=2.0, renorm_type="per_pixel")


def test_renorm_is_per_sample_or_per_token():
    guided = torch.tensor([[[6.0, 8.0], [0.3, 0.4]]])  # one sample, two tokens
    ref = torch.tensor([[[3.0, 4.0], [3.0, 4.0]]])
    per_token = flow.renorm(guided, ref, channel=True)
    torch.testing.assert_close(per_token, torch.tensor([[[3.0, 4.0], [0.3, 0.4]]]))
    whole = flow.renorm(guided, ref, channel=False)
    scale = math.sqrt(50) / math.sqrt(100 + 0.25)
    torch.testing.assert_close(whole, guided * scale)


def test_image_cfg_for_editing_by_hand():
    v_cond, v_text, v_img = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.5]])
    v = flow.cfg_velocity(v_cond, v_text, text_scale=2.0, v_img_uncond=v_img, img_scale=2.0, renorm_type="none")
    # text: 0 + 2 (1 - 0) = 2; image: 0.5 + 2 (2 - 0.5) = 3.5
    assert v.item() == pytest.approx(3.5)


def test_text_channel_renorms_the_text_guidance_per_token_before_image_cfg():
    v_cond = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]])  # one sample, two tokens of 2 channels
    v_text, v_img = torch.zeros_like(v_cond), torch.full_like(v_cond, 0.1)
    v = flow.cfg_velocity(v_cond, v_text, text_scale=2.0, v_img_uncond=v_img, img_scale=3.0, renorm_type="text_channel")
    # text CFG 2 v_cond, re-scaled per token back to v_cond; then image CFG without re-scaling
    torch.testing.assert_close(v, v_img + 3.0 * (v_cond - v_img))
    channel = flow.cfg_velocity(v_cond, v_text, text_scale=2.0, v_img_uncond=v_img, img_scale=3.0, renorm_type="channel")
    torch.testing.assert_close(flow._norm(channel, True), flow._norm(v_cond, True))  # per token at most ||v_cond||


def test_guided_calls_the_unconditional_branch_only_inside_the_interval():
    calls = []
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    def uncond(x, t):
        calls.append(t)
        return torch.zeros_like(x)
    fn = flow.guided(cond, uncond, text_scale=4.0, interval=(0.4, 1.0))
    flow.euler_sample(fn, torch.zeros(1, 2), steps=10, shift=1.0)
    assert calls and all(0.4 < t <= 1.0 for t in calls) and len(calls) == 6  # t = 1.0, 0.9, ..., 0.5
    calls.clear()
    flow.euler_sample(flow.guided(cond, uncond, text_scale=1.0), torch.zeros(1, 2), steps=4)
    assert not calls  # text CFG off: the unconditional branch never runs
