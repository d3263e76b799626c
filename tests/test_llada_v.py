"""The published LLaDA-V layout: a checkpoint our tests write loads as an understanding-only model."""

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from omnidlm.formats import llada_v as F
from omnidlm.formats.llada import llama_config_json
from omnidlm.models.lladao import LLaDAO, lladao_preset
from omnidlm.sequence.segments import pack, text, vit_image


def test_llada_v_layout_loads_as_understanding_only(tmp_path):
    torch.manual_seed(0)
    cfg = F.llada_v_config({**llama_config_json(lladao_preset("lladao-tiny").llm),
                            "vision_config": lladao_preset("lladao-tiny").vit})
    model = LLaDAO(cfg).eval()
    F.save_llada_v(model, tmp_path / "v")
    tensors = load_file(tmp_path / "v" / "model.safetensors")
    for key in ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight", "model.mm_projector.0.weight",
                "model.mm_projector.2.bias", "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
                "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"]:
        assert key in tensors, key
    assert not any("moe_gen" in k for k in tensors)
    # the published file also holds the tower's dropped last layer, its post norm and image_newline
    tower = "model.vision_tower.vision_tower.vision_model."
    extra = {tower + "encoder.layers.1.mlp.fc1.weight": torch.zeros(64, 32),
             tower + "post_layernorm.weight": torch.ones(32), "model.image_newline": torch.zeros(64)}
    save_file({**tensors, **extra}, tmp_path / "v" / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = F.load_llada_v(tmp_path / "v")
    assert not loaded.can_draw and loaded.vit.post_layernorm is None
    lay = pack([[[text(2), vit_image(16), text(3, "full")]]])
    ids, img = torch.randint(0, 500, lay.shape), [torch.randn(3, 16, 16)]
    with torch.no_grad():
        assert torch.equal(model(ids, lay, img).logits, loaded(ids, lay, img).logits)


def test_llada_v_bad_projector_is_named():
    with pytest.raises(ValueError, match="mm_projector_type"):
        F.llada_v_config({"mm_projector_type": "linear"})
