"""Published omni layouts on tiny checkpoints our tests write: LLaDA-o (`llm_config.json`,
`vit_config.json`, `ae.safetensors`, `ema.safetensors` + index, `*_moe_gen` names) round trips bit
for bit; missing files are named."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import same_tensors, tensors_of
from omnidlm.formats import lladao as F
from omnidlm.models.lladao import LLaDAO, lladao_preset
from omnidlm.sequence.segments import pack, text, vae_image, vit_image






@pytest.fixture(scope="module")
def omni():
    torch.manual_seed(0)
    model = LLaDAO(lladao_preset("lladao-tiny")).eval()
    with torch.no_grad():  # make every part non-trivial, the zero-initialised ones included
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def saved(omni, tmp_path_factory):
    return F.save_lladao(omni, tmp_path_factory.mktemp("ckpt") / "lladao-tiny")


def test_layout_files_and_published_names(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["ae.safetensors", "ae_config.json", "ema.safetensors", "llm_config.json", "vit_config.json"]
    ema, ae = load_file(saved / F.EMA), load_file(saved / F.AE)
    for key in ["language_model.model.layers.1.self_attn.q_proj_moe_gen.weight",
                "language_model.model.layers.1.self_attn.k_norm_moe_gen.weight",
                "language_model.model.layers.0.mlp_moe_gen.gate_proj.weight",
                "language_model.model.layers.0.post_attention_layernorm_moe_gen.weight",
                "language_model.model.norm_moe_gen.weight", "language_model.lm_head.weight",
                "vit_model.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                "connector.fc1.weight", "vit_pos_embed.pos_embed", "vae2llm.weight", "llm2vae.bias",
                "time_embedder.mlp.2.weight", "latent_pos_embed.pos_embed"]:
        assert key in ema, key
    # the ViT patch embedding is a Linear over (p, p, C); the last ViT layer is not stored
    assert ema["vit_model.vision_model.embeddings.patch_embedding.weight"].shape == (32, 4 * 4 * 3)
    assert "vit_model.vision_model.encoder.layers.1.self_attn.q_proj.weight" not in ema
    assert ae["encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    assert "decoder.up.1.upsample.conv.weight" in ae and "encoder.down.0.downsample.conv.weight" in ae
    cfg = json.loads((saved / F.LLM_CONFIG).read_text())
    assert cfg["layer_module"] == "LLaDAMoTDecoderLayer" and cfg["qk_norm"] is True


def test_round_trip_is_bit_exact(omni, saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unused tensor
        model = F.load_lladao(saved)
    same_tensors(omni.state_dict(), model.state_dict())
    F.save_lladao(model, tmp_path / "sharded", max_shard_bytes=100_000)
    assert (tmp_path / "sharded" / F.EMA_INDEX).is_file()
    again = F.load_lladao(tmp_path / "sharded")
    F.save_lladao(again, tmp_path / "back")
    same_tensors(tensors_of(saved, "ema.safetensors"), tensors_of(tmp_path / "back", "ema.safetensors"))
    same_tensors(tensors_of(saved, "ae.safetensors"), tensors_of(tmp_path / "back", "ae.safetensors"))
    assert model.config.max_latent_size == 8 and model.config.vit_max_patches_per_side == 4


def test_loaded_model_computes_the_same(omni, saved):
    model = F.load_lladao(saved)
    lay = pack([[[text(3), vit_image(16), text(2), vae_image(16, noisy=True)]]])
    ids = torch.randint(0, 500, lay.shape)
    args = ([torch.randn(3, 16, 16)], [torch.randn(4, 8, 8)], torch.tensor([0.5]))
    with torch.no_grad():
        a, b = omni(ids, lay, *args), model(ids, lay, *args)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.velocity[0], b.velocity[0])


def test_patch_linear_matches_the_conv(omni, saved):
    linear = load_file(saved / F.EMA)["vit_model.vision_model.embeddings.patch_embedding.weight"]
    img = torch.randn(1, 3, 4, 4)
    conv_out = omni.vit.embeddings.patch_embedding(img)[0, :, 0, 0]
    patch = img[0].permute(1, 2, 0).reshape(-1)  # (p, p, C) flattened, channels last
    bias = omni.vit.embeddings.patch_embedding.bias
    torch.testing.assert_close(linear @ patch + bias, conv_out)


def test_ldm_names_of_a_four_level_vae():
    assert F._ldm_name("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 4) == "encoder.down.1.block.0.nin_shortcut.weight"
    assert F._ldm_name("decoder.up_blocks.0.resnets.2.conv2.bias", 4) == "decoder.up.3.block.2.conv2.bias"
    assert F._ldm_name("decoder.up_blocks.2.upsamplers.0.conv.weight", 4) == "decoder.up.1.upsample.conv.weight"
    assert F._ldm_name("encoder.mid_block.resnets.1.norm1.weight", 4) == "encoder.mid.block_2.norm1.weight"
    assert F._ldm_name("decoder.mid_block.attentions.0.to_out.0.weight", 4) == "decoder.mid.attn_1.proj_out.weight"
    assert F._ldm_name("encoder.conv_norm_out.bias", 4) == "encoder.norm_out.bias"


@pytest.mark.parametrize("name", [F.LLM_CONFIG, F.VIT_CONFIG, F.AE, F.EMA])
def test_missing_file_is_named(saved, tmp_path, name):
    import shutil

    shutil.copytree(saved, tmp_path / "bad")
    (tmp_path / "bad" / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        F.load_lladao(tmp_path / "bad")


def test_wrong_tensor_shape_is_named(saved, tmp_path):
    import shutil

    shutil.copytree(saved, tmp_path / "bad")
    ema = load_file(tmp_path / "bad" / F.EMA)
    ema["vae2llm.weight"] = torch.zeros(64, 12)
    save_file(ema, tmp_path / "bad" / F.EMA)
    with pytest.raises(ValueError, match=r"vae2llm\.weight has shape \(64, 12\)"):
        F.load_lladao(tmp_path / "bad")
