"""The LLaDA-o omni model on a tiny preset: shapes, copy-init, noise segments invisible end to end,
latent patching and embedders by hand, and bad inputs that name what is wrong."""

import pytest
import torch

from omnidlm.models import latents as lat
from omnidlm.models.lladao import LLaDAO, LLaDAOConfig, lladao_preset
from omnidlm.sequence.segments import pack, text, vae_image, vit_image


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LLaDAO(lladao_preset("lladao-tiny")).eval()


def inputs(lay, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 500, lay.shape, generator=g)
    return ids, [torch.randn(3, 16, 16, generator=g)], [torch.randn(4, 8, 8, generator=g)]


LAYOUT = pack([[[text(3), vit_image(16), text(2), vae_image(16, noisy=True), text(2, "full")]]])


def test_forward_shapes_and_zero_initial_velocity(model):
    ids, imgs, zs = inputs(LAYOUT)
    with torch.no_grad():
        out = model(ids, LAYOUT, vit_images=imgs, latents=zs, timesteps=torch.tensor([0.6]))
    assert out.logits.shape == (1, LAYOUT.shape[1], 512)
    assert len(out.velocity) == 1 and out.velocity[0].shape == (4, 8, 8)
    assert not out.velocity[0].any()  # llm2vae is zero-initialised


def test_noisy_latents_are_invisible_to_text(model):
    ids, imgs, zs = inputs(LAYOUT)
    with torch.no_grad():
        a = model(ids, LAYOUT, imgs, zs, torch.tensor([0.6])).logits
        b = model(ids, LAYOUT, imgs, [torch.randn(4, 8, 8)], torch.tensor([0.2])).logits
    text_pos = (LAYOUT.kind[0] == 0).nonzero().flatten()
    noise = LAYOUT.split_modes[0] == 2
    outside = text_pos[~noise[text_pos]]
    torch.testing.assert_close(a[0, outside], b[0, outside])
    assert not torch.allclose(a[0, noise], b[0, noise])  # the noise split's markers do see it


def test_velocity_trains_only_through_generation_side_when_frozen():
    torch.manual_seed(0)
    cfg = lladao_preset("lladao-tiny", freeze_und=True)
    m = LLaDAO(cfg)
    ids, imgs, zs = inputs(LAYOUT)
    out = m(ids, LAYOUT, imgs, zs, torch.tensor([0.6]))
    (out.velocity[0].sum() + out.logits.sum()).backward()
    assert m.llm2vae.weight.grad is not None and m.vae2llm.weight.grad is not None
    assert m.language_model.layers[0].gen.attn.qkv.weight.grad is not None
    assert m.language_model.layers[0].attn.qkv.weight.grad is None and m.connector.fc1.weight.grad is None
    assert not any(p.requires_grad for p in m.vae.parameters())


def test_patchify_order_and_inverse():
    z = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # C=2, 4x4
    tokens = lat.patchify(z, 2)
    assert tokens.shape == (1, 4, 8)
    # first patch: rows 0-1, cols 0-1, channels last inside the patch
    assert tokens[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    assert torch.equal(lat.unpatchify(tokens, 2, 2, 2), z)
    with pytest.raises(ValueError, match="multiple"):
        lat.patchify(torch.zeros(1, 2, 3, 4), 2)


def test_embedders_by_hand():
    emb = lat.TimestepEmbedder(8, frequencies=4)
    assert emb.features(torch.tensor([0.0])).tolist() == [[1.0, 1.0, 0.0, 0.0]]
    table = lat.sincos_2d(8, 3)  # (9, 8): [sin | cos] of the column, then of the row
    assert table.shape == (9, 8)
    assert table[0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert table[1, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item())  # col 1, row 0
    assert lat.flat_position_ids(2, 3, 5).tolist() == [0, 1, 2, 5, 6, 7]
    with pytest.raises(ValueError, match="exceeds"):
        lat.flat_position_ids(6, 1, 5)


def test_vae_round_trip_shapes(model):
    imgs = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = lat.encode_latents(model.vae, imgs)
        assert z.shape == (2, 4, 8, 8)
        assert lat.decode_latents(model.vae, z).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="multiples of 2"):
        lat.encode_latents(model.vae, torch.zeros(1, 3, 15, 16))


def test_flux_vae_config_is_the_published_one():
    assert lat.FLUX_VAE["latent_channels"] == 16 and lat.vae_downsample(lat.FLUX_VAE) == 8
    assert (lat.FLUX_VAE["scaling_factor"], lat.FLUX_VAE["shift_factor"]) == (0.3611, 0.1159)


def test_bad_inputs_are_named(model):
    ids, imgs, zs = inputs(LAYOUT)
    with pytest.raises(ValueError, match=r"image size 15x15"):
        model(ids, LAYOUT, [torch.randn(3, 15, 15)], zs, torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"image size 20x20"):
        model(ids, LAYOUT, [torch.randn(3, 20, 20)], zs, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="16 ViT image tokens but the inputs give 4"):
        model(ids, LAYOUT, [torch.randn(3, 8, 8)], zs, torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"latent image must be \(4, h, w\)"):
        model(ids, LAYOUT, imgs, [torch.randn(3, 8, 8)], torch.tensor([0.5]))
    with pytest.raises(ValueError, match="timesteps"):
        model(ids, LAYOUT, imgs, zs, torch.tensor([0.5, 0.1]))
    with pytest.raises(ValueError, match="projector"):
        LLaDAOConfig(llm=model.config.llm, projector="qformer")


def test_model_without_generation_refuses_latents():
    cfg = lladao_preset("lladao-tiny", vae=None)
    m = LLaDAO(cfg).eval()
    assert not m.can_draw and not hasattr(m, "llm2vae")
    lay = pack([[[text(2), vae_image(16, noisy=True)]]])
    with pytest.raises(ValueError, match="no generation expert"):
        m(torch.zeros(lay.shape, dtype=torch.long), lay, latents=[torch.randn(4, 8, 8)], timesteps=torch.tensor([0.5]))
