"""The published LLaDA-V layout: a checkpoint our tests write round trips as an understanding-only
model, and the published checkpoint of the llada-v-tiny fixture loads as it is (tower shape from the
`mm_vision_tower` directory, mask id from the tokenizer, `image_newline`, 384 px tiles of patch 14)."""

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES
from omnidlm.formats import llada_v as F
from omnidlm.formats.llada import llama_config_json
from omnidlm.models.lladao import LLaDAO, lladao_preset
from omnidlm.sequence.segments import pack, text, vit_image

LLADA_V = FIXTURES / "llada-v-tiny"


def test_llada_v_layout_loads_as_understanding_only(tmp_path):
    torch.manual_seed(0)
    cfg = F.llada_v_config({**llama_config_json(lladao_preset("lladao-tiny").llm),
                            "vision_config": lladao_preset("lladao-tiny").vit, "mm_patch_merge_type": "spatial_unpad"})
    model = LLaDAO(cfg).eval()
    F.save_llada_v(model, tmp_path / "v")
    tensors = load_file(tmp_path / "v" / "model.safetensors")
    for key in ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight", "model.mm_projector.0.weight",
                "model.mm_projector.2.bias", "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
                "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"]:
        assert key in tensors, key
    assert not any("moe_gen" in k for k in tensors)
    assert "model.image_newline" in tensors
    # the published file also holds the tower's dropped last layer and its post norm
    tower = "model.vision_tower.vision_tower.vision_model."
    extra = {tower + "encoder.layers.1.mlp.fc1.weight": torch.zeros(64, 32),
             tower + "post_layernorm.weight": torch.ones(32)}
    save_file({**tensors, **extra}, tmp_path / "v" / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = F.load_llada_v(tmp_path / "v")
    assert not loaded.can_draw and loaded.vit.post_layernorm is None
    assert torch.equal(loaded.image_newline, model.image_newline)
    assert loaded.config.extra == {"mm_patch_merge_type": "spatial_unpad"}
    lay = pack([[[text(2), vit_image(16), text(3, "full")]]])
    ids, img = torch.randint(0, 500, lay.shape), [torch.randn(3, 16, 16)]
    with torch.no_grad():
        assert torch.equal(model(ids, lay, img).logits, loaded(ids, lay, img).logits)


def test_llada_v_bad_projector_is_named():
    with pytest.raises(ValueError, match="mm_projector_type"):
        F.llada_v_config({"mm_projector_type": "linear"})


def test_llada_v_bad_select_layer_is_named():
    with pytest.raises(ValueError, match="mm_vision_select_layer"):
        F.llada_v_config({"mm_vision_select_layer": -1})


# --- the published checkpoint (tests/data/fixtures/llada-v-tiny) -------------------------------------


def test_published_checkpoint_loads_as_it_is(llada_v_tiny):
    model = llada_v_tiny
    assert model.config.llm.mask_id == 263  # config.json has none: the tokenizer's <|mdm_mask|>
    assert model.config.llm.eot_id == 262
    # the tower's shape from siglip-tiny-patch14-384/config.json, its last layer dropped
    assert model.vit.hidden_size == 32 and len(model.vit.encoder.layers) == 1
    assert model.vit.image_size == 384 and model.vit.grid(384, 384) == (27, 27)  # 384 // 14, last pixels dropped
    assert model.image_newline.shape == (64,)
    assert model.config.extra["image_aspect_ratio"] == "anyres_max_1"


def test_published_checkpoint_loads_without_unused_tensors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.load_llada_v(LLADA_V)


def test_missing_tower_directory_is_named(tmp_path):
    hf = {"mm_vision_tower": "no-such-tower"}
    with pytest.raises(ValueError, match="no-such-tower"):
        F.tower_config(tmp_path, hf)
    assert F.tower_config(tmp_path, {"mm_vision_tower": "google/siglip2-so400m-patch14-384"})["image_size"] == 384


def test_mask_id_without_tokenizer_or_config_is_named(tmp_path):
    with pytest.raises(ValueError, match="mask_token_id"):
        F.mask_id_of(tmp_path, {}, vocab_size=512)
    assert F.mask_id_of(tmp_path, {"mask_token_id": 7}, vocab_size=512) == 7
