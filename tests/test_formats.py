"""Checkpoint formats: every layout reads back what it wrote, bit for bit; bad checkpoints give
errors that name what is wrong; a failed write leaves nothing half-written."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import omnidlm
from conftest import FIXTURES, LLADA2_MASK_ID, same_tensors, tensors_of
from omnidlm.formats import io as fio






@pytest.mark.parametrize("src, via, kw", [
    ("llada-tiny", "omnidlm", {}),
    ("llada-tiny", "llada-v", {}),
    ("llada2-moe-tiny", "llada2-fused", {"mask_id": LLADA2_MASK_ID}),
    ("llada2-moe-tiny", "omnidlm", {"mask_id": LLADA2_MASK_ID}),
])
def test_round_trip_is_bit_exact(tmp_path, src, via, kw):
    back_format = "llada" if src == "llada-tiny" else "llada2"
    omnidlm.convert(FIXTURES / src, tmp_path / "mid", via, **kw)
    omnidlm.convert(tmp_path / "mid", tmp_path / "back", back_format, **kw)
    same_tensors(tensors_of(FIXTURES / src), tensors_of(tmp_path / "back"))
    assert omnidlm.load(tmp_path / "back", **kw).source_format == back_format


def test_sharded_checkpoint_loads_to_same_logits(tmp_path, llada_tiny):
    omnidlm.save(llada_tiny, tmp_path / "sharded", "llada", max_shard_bytes=100_000)
    index = json.loads((tmp_path / "sharded" / fio.INDEX).read_text())
    assert len(set(index["weight_map"].values())) > 2
    model = omnidlm.load(tmp_path / "sharded")
    x = torch.randint(0, 500, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(x).logits, llada_tiny(x).logits)


def test_load_casts_dtype(llada_tiny):
    model = omnidlm.load(FIXTURES / "llada-tiny", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 512)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        omnidlm.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        omnidlm.load(tmp_path / "empty")
    shutil.copy(FIXTURES / "llada-tiny" / "config.json", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        omnidlm.load(tmp_path / "empty")


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    shutil.copytree(FIXTURES / "llada-tiny", tmp_path / "bad")
    tensors = load_file(tmp_path / "bad" / "model.safetensors")
    tensors["model.transformer.blocks.1.attn_out.weight"] = torch.zeros(64, 32)
    save_file(tensors, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(ValueError, match=r"blocks\.1\.attn_out\.weight has shape \(64, 32\).*\(64, 64\)"):
        omnidlm.load(tmp_path / "bad")


def test_missing_tensor_is_named(tmp_path):
    shutil.copytree(FIXTURES / "llada-tiny", tmp_path / "bad")
    tensors = load_file(tmp_path / "bad" / "model.safetensors")
    del tensors["model.transformer.ln_f.weight"]
    save_file(tensors, tmp_path / "bad" / "model.safetensors")
    with pytest.raises(KeyError, match="ln_f"):
        omnidlm.load(tmp_path / "bad")


def test_unknown_format_and_bad_config_field(tmp_path, llada_tiny):
    with pytest.raises(ValueError, match="valid formats"):
        omnidlm.save(llada_tiny, tmp_path / "x", "gguf")
    with pytest.raises(ValueError, match="n_heads"):
        omnidlm.ModelConfig(hidden_size=64, n_heads=5)
    with pytest.raises(ValueError, match="dense models only"):
        omnidlm.save(omnidlm.load(FIXTURES / "llada2-moe-tiny", mask_id=LLADA2_MASK_ID), tmp_path / "y", "llada")


def test_crash_during_save_leaves_previous_checkpoint_intact(tmp_path, llada_tiny, monkeypatch):
    target = tmp_path / "ckpt"
    omnidlm.save(llada_tiny, target, "llada")
    before = tensors_of(target)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fio, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        omnidlm.save(llada_tiny, target, "llada", overwrite=True)
    same_tensors(before, tensors_of(target))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left behind


def test_existing_destination_needs_overwrite(tmp_path, llada_tiny):
    omnidlm.save(llada_tiny, tmp_path / "c", "llada")
    with pytest.raises(FileExistsError, match="--force"):
        omnidlm.save(llada_tiny, tmp_path / "c", "llada")
