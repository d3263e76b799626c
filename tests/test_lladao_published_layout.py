"""The published LLaDA-o layout as the published code writes it (fixture `lladao-tiny`): no
`ae_config.json`; the VAE comes from `ae_params.json` (published `AutoEncoderParams`) or, without
it, is the FLUX VAE; a VAE that disagrees with its tensors names the file its config came from."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnidlm.formats import lladao as F

FIXTURE = Path(__file__).parent / "data" / "fixtures" / "lladao-tiny"


def copy(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "lladao-tiny"))


def test_fixture_loads_from_ae_params_without_ae_config():
    assert not (FIXTURE / F.AE_CONFIG).exists()
    model = F.load_lladao(FIXTURE)
    vae = model.config.vae
    assert vae["block_out_channels"] == [32, 64] and vae["latent_channels"] == 4 and vae["layers_per_block"] == 1
    ae = load_file(FIXTURE / F.AE)
    assert torch.equal(model.vae.encoder.conv_in.weight, ae["encoder.conv_in.weight"])


def test_ae_params_is_the_published_autoencoderparams():
    params = json.loads((FIXTURE / F.AE_PARAMS).read_text())
    cfg = F.vae_from_params(params, FIXTURE / F.AE_PARAMS)
    assert cfg["block_out_channels"] == [params["ch"] * m for m in params["ch_mult"]]
    assert (cfg["scaling_factor"], cfg["shift_factor"]) == (params["scale_factor"], params["shift_factor"])
    with pytest.raises(ValueError, match="ae_params.json.*'z_channels'"):
        F.vae_from_params({k: v for k, v in params.items() if k != "z_channels"}, FIXTURE / F.AE_PARAMS)


def test_without_ae_params_the_flux_vae_is_assumed_and_named(tmp_path):
    path = copy(tmp_path)
    (path / F.AE_PARAMS).unlink()
    with pytest.raises(ValueError, match="ae.safetensors does not match the VAE of the FLUX VAE"):
        F.load_lladao(path)


def test_wrong_ae_params_names_the_file(tmp_path):
    path = copy(tmp_path)
    params = json.loads((path / F.AE_PARAMS).read_text())
    (path / F.AE_PARAMS).write_text(json.dumps({**params, "ch": 64}))  # tensors of ch 32
    with pytest.raises(ValueError, match=r"ae\.safetensors does not match the VAE of .*ae_params\.json"):
        F.load_lladao(path)
    (path / F.AE_PARAMS).write_text(json.dumps({**params, "ch": 16}))  # no GroupNorm(32) over 16 channels
    with pytest.raises(ValueError, match=r"ae_params\.json"):
        F.load_lladao(path)


def test_bad_llm_config_names_the_file_and_field(tmp_path):
    path = copy(tmp_path)
    cfg = json.loads((path / F.LLM_CONFIG).read_text())
    (path / F.LLM_CONFIG).write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
    with pytest.raises(ValueError, match=r"llm_config\.json lacks the field 'hidden_size'"):
        F.load_lladao(path)
    (path / F.LLM_CONFIG).write_text(json.dumps({**cfg, "num_hidden_layers": 2.5}))
    with pytest.raises(ValueError, match=r"llm_config\.json: config field 'n_layers' must be int"):
        F.load_lladao(path)
