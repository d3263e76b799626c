"""LLaDA-o's drawing path against the published code (fixture `lladao-tiny`, tests/data/fixtures):
the generation forward, the VAE, and the published text-to-image sampler through the Python API
and through `omnidlm draw` (the command-line contract of docs/architecture.md, "Drawing")."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from PIL import Image

from omnidlm.cli import main
from omnidlm.formats.lladao import image_marker_ids, load_lladao
from omnidlm.models.latents import decode_latents, encode_latents, unpatchify
from omnidlm.sampling import image as I
from omnidlm.sequence.segments import single, text, vae_image

from conftest import FIXTURES, reference

PATH = FIXTURES / "lladao-tiny"


@pytest.fixture(scope="module")
def model():
    return load_lladao(PATH).eval()


@pytest.fixture(scope="module")
def ref():
    return reference("lladao-tiny")


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


def settings_of(case) -> I.FlowSettings:
    k = case["kwargs"]
    return I.FlowSettings(num_timesteps=k["num_timesteps"], timestep_shift=k["timestep_shift"],
                          cfg_text_scale=k["cfg_text_scale"], cfg_img_scale=k["cfg_img_scale"],
                          cfg_interval=tuple(k["cfg_interval"]), cfg_renorm_min=k["cfg_renorm_min"],
                          cfg_renorm_type=k["cfg_renorm_type"])


def init_noise(case) -> torch.Tensor:
    """The recorded packed noise (h w, p p C) as (C, H/f, W/f), the layout of `final_latent`."""
    H, W = case["kwargs"]["image_shapes"]
    return unpatchify(_t(case["init_noise_packed"])[None], H // 4, W // 4, 2)[0]


def test_the_generation_forward_gives_the_recorded_velocity(model, ref):
    case = ref["generation_train"]
    ids = torch.tensor([[i if i >= 0 else 0 for i in case["input_ids"]]])
    layout = single([text(8, "full"), vae_image(24, noisy=True)])
    assert layout.position_ids[0].tolist() == case["position_ids"]
    assert layout.mask[0, 0].tolist() == case["attention_mask_bool"]
    with torch.no_grad():
        out = model(ids, layout, latents=[_t(case["z_t_latent"])], timesteps=_t([case["t_model"]]), compute_logits=False)
    for name in ("generation_train", "generation_inference"):
        err = (out.velocity[0] - _t(ref[name]["velocity_latent"])).abs().max().item()
        assert err < 1e-5, (name, err)


def test_the_vae_encodes_and_decodes_as_published(model, ref):
    case = ref["vae"]
    image = _t(case["image"])[None]
    with torch.no_grad():
        dist = model.vae.encode(image).latent_dist
        moments = torch.cat([dist.mean, dist.logvar], dim=1)[0]
        mean = encode_latents(model.vae, image)[0]
        decoded = decode_latents(model.vae, _t(case["decode_input"])[None])[0]
    assert (moments - _t(case["encoder_moments"])).abs().max() < 1e-4
    assert (mean - _t(case["latent_mean"])).abs().max() < 1e-4
    assert (decoded - _t(case["decode_output"])).abs().max() < 1e-4


def test_text_to_image_matches_the_published_sampler(model, ref):
    case = ref["text_to_image"]
    H, W = case["kwargs"]["image_shapes"]
    markers = image_marker_ids(PATH)
    assert markers == (502, 503)
    settings, final = settings_of(case), _t(case["final_latent"])
    z = I.draw_lladao_ids(model, case["prompt_ids"], H, W, settings, init_noise(case), markers=markers)
    assert z.shape == final.shape and (z - final).abs().max() < 1e-4
    # without --init-noise the seed draws the published noise (torch.randn after torch.manual_seed)
    seeded = I.draw_lladao_ids(model, case["prompt_ids"], H, W, settings, seed=case["torch_seed_before_call"],
                               markers=markers)
    assert (seeded - final).abs().max() < 1e-4
    with torch.no_grad():
        pixels = decode_latents(model.vae, z[None])
    assert (pixels[0] - _t(case["decoded"])).abs().max() < 1e-4
    assert np.abs(I.to_uint8(pixels)[0].astype(int) - np.array(case["image_uint8"])).max() <= 1
    # every knob is exercised: without text CFG or with another shift the latent differs
    for change in (dict(cfg_text_scale=1.0), dict(timestep_shift=1.0), dict(cfg_renorm_type="channel")):
        other = I.draw_lladao_ids(model, case["prompt_ids"], H, W, dataclasses.replace(settings, **change),
                                  init_noise(case), markers=markers)
        assert (other - final).abs().max() > 1e-2, change


def contract(case, tmp_path, *extra) -> list[str]:
    k = case["kwargs"]
    np.save(tmp_path / "noise.npy", init_noise(case).numpy())
    return ["draw", "--model", str(PATH), "--prompt-ids", ",".join(map(str, case["prompt_ids"])),
            "--height", str(k["image_shapes"][0]), "--width", str(k["image_shapes"][1]),
            "--num-timesteps", str(k["num_timesteps"]), "--cfg-scale", str(k["cfg_text_scale"]),
            "--cfg-interval", *map(str, k["cfg_interval"]), "--timestep-shift", str(k["timestep_shift"]),
            "--cfg-renorm-min", str(k["cfg_renorm_min"]), "--cfg-renorm-type", k["cfg_renorm_type"],
            "--init-noise", str(tmp_path / "noise.npy"), "--scale", "1", *extra]


def test_the_draw_command_contract(ref, tmp_path):
    case = ref["text_to_image"]
    args = contract(case, tmp_path, "--save-latent", str(tmp_path / "z.npy"), "--out", str(tmp_path / "img.png"))
    assert main(args) == 0
    z = np.load(tmp_path / "z.npy")
    assert z.dtype == np.float32 and np.abs(z - np.array(case["final_latent"])).max() < 1e-4
    png = np.array(Image.open(tmp_path / "img.png"))
    assert png.shape == (16, 24, 3) and np.abs(png.astype(int) - np.array(case["image_uint8"])).max() <= 1
    assert main(contract(case, tmp_path, "--out", str(tmp_path / "img.jpg"))) == 0
    assert Image.open(tmp_path / "img.jpg").format == "JPEG" and (tmp_path / "img.jpg").is_file()


def refused(args, capsys, match: str) -> None:
    assert main(args) != 0
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_the_draw_command_refuses_bad_input(ref, tmp_path, capsys):
    case = ref["text_to_image"]
    refused(contract(case, tmp_path, "--out", str(tmp_path / "img.xyz")), capsys, "--out .*'.xyz'")
    np.save(tmp_path / "bad.npy", np.zeros((4, 8, 8), np.float32))
    args = contract(case, tmp_path, "--out", str(tmp_path / "a.png"))
    args[args.index("--init-noise") + 1] = str(tmp_path / "bad.npy")
    refused(args, capsys, r"initial noise must be \(C, H/f, W/f\) = \(4, 8, 12\)")
    args = contract(case, tmp_path, "--out", str(tmp_path / "a.png"))
    args[args.index("--height") + 1] = "18"
    refused(args, capsys, "multiples of 4")
    refused(["draw", "--model", str(PATH), "--out", str(tmp_path / "a.png")], capsys, "one of them")
    assert not list(tmp_path.glob("a.png")) and not list(tmp_path.glob(".*"))  # nothing half-written
