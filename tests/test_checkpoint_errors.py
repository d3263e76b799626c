"""Every corrupt or inconsistent checkpoint gets one clear error naming the file and what is wrong,
through the command line as one `omnidlm generate: error: ...` line (no traceback): each case
corrupts a copy of models/text-tiny in a tmp dir."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from omnidlm.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "text-tiny"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def _config(path, **changes):
    cfg = json.loads((path / CONFIG).read_text())
    cfg.update(changes)
    (path / CONFIG).write_text(json.dumps(cfg))


def _drop_config(path, field):
    cfg = json.loads((path / CONFIG).read_text())
    del cfg[field]
    (path / CONFIG).write_text(json.dumps(cfg))


def _tensors(path, change):
    state = load_file(path / WEIGHTS)
    change(state)
    save_file(state, path / WEIGHTS)


def _bytes(path, change):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(change(data))


def _set(name, make):
    return lambda state: state.__setitem__(name, make(state[name]))


def _shards(path, where, name):
    """One shard written at `where` (outside the checkpoint), named `name` by the index."""
    state = load_file(path / WEIGHTS)
    (path / WEIGHTS).unlink()
    save_file(state, where)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: name for k in state}}))


def _extra_layer(state):
    for name in [k for k in state if k.startswith("layers.3.")]:
        state[name.replace("layers.3.", "layers.4.")] = state[name].clone()


EMBED = "embed.weight"
CASES = {  # class -> (corruption, what the one error line must say)
    "truncated safetensors": (lambda p: _bytes(p, lambda b: b[: len(b) // 2]), r"model\.safetensors is not a readable safetensors"),
    "empty safetensors": (lambda p: _bytes(p, lambda b: b""), r"model\.safetensors is not a readable safetensors"),
    "corrupted header": (lambda p: _bytes(p, lambda b: b[:8] + b"{garbage" + b[16:]), r"model\.safetensors is not a readable"),
    "hidden_size a string": (lambda p: _config(p, hidden_size="128"), r"config\.json: config field 'hidden_size' must be int, got '128'"),
    "n_layers a fraction": (lambda p: _config(p, n_layers=4.5), r"config\.json: config field 'n_layers' must be int, got 4\.5"),
    "rope_theta NaN": (lambda p: _config(p, rope_theta="NaN"), r"config\.json: config field 'rope_theta' must be float"),
    "config not an object": (lambda p: (p / CONFIG).write_text("[1, 2]"), r"config\.json must hold a JSON object, not a list"),
    "config not JSON": (lambda p: (p / CONFIG).write_text("{oops"), r"config\.json is not valid JSON"),
    "field missing, tensors disagree": (lambda p: _drop_config(p, "intermediate_size"),
                                        r"has shape .* does not set the field\(s\) \['intermediate_size'\]"),
    "tokenizer.json does not parse": (lambda p: (p / "tokenizer.json").write_text("{not a tokenizer"),
                                      r"tokenizer\.json: not a readable tokenizer"),
    "integer tensor": (lambda p: _tensors(p, _set(EMBED, lambda t: t.to(torch.int32))),
                       r"model\.safetensors: tensor embed\.weight is torch\.int32; weights must be floating point"),
    "mixed dtypes": (lambda p: _tensors(p, _set(EMBED, lambda t: t.to(torch.bfloat16))),
                     r"mixes float dtypes .*load it in one dtype"),
    "NaN weight": (lambda p: _tensors(p, _set("norm.weight", lambda t: t.index_fill(0, torch.tensor([3]), float("nan")))),
                   r"model\.safetensors: tensor norm\.weight holds NaN or inf"),
    "inf weight": (lambda p: _tensors(p, _set(EMBED, lambda t: t.index_fill(0, torch.tensor([0]), float("inf")))),
                   r"tensor embed\.weight holds NaN or inf"),
    "fewer layers in config": (lambda p: _config(p, n_layers=3), r"the config says 3 layers \(field 'n_layers'\) but the tensors .* hold 4"),
    "more layers in config": (lambda p: _config(p, n_layers=5), r"the config says 5 layers \(field 'n_layers'\) but the tensors .* hold 4"),
    "extra layer in tensors": (lambda p: _tensors(p, _extra_layer), r"the config says 4 layers .* hold 5"),
    "eos id outside vocab": (lambda p: _config(p, eos_id=103), r"config field 'eos_id' \(103\) is outside the vocabulary \(103\)"),
    "shard index with ../": (lambda p: _shards(p, p.parent / "part.safetensors", "../part.safetensors"), r"names shard\(s\) outside the checkpoint directory"),
    "shard index absolute": (lambda p: _shards(p, p.parent / "part.safetensors", str(p.parent / "part.safetensors")), r"names shard\(s\) outside the checkpoint directory"),
}


def corrupted(tmp_path, name) -> Path:
    path = Path(shutil.copytree(SHIPPED, tmp_path / "ckpt"))
    CASES[name][0](path)
    return path


def one_error_line(capsys, path) -> str:
    code = main(["generate", "--model", str(path), "--prompt-ids", "1,2,3", "--gen-length", "4", "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("omnidlm generate: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_checkpoint_gets_one_clear_error(tmp_path, capsys, name):
    line = one_error_line(capsys, corrupted(tmp_path, name))
    assert str(tmp_path / "ckpt") in line or "config field" in line, line  # the file is named
    assert __import__("re").search(CASES[name][1], line), line


def test_missing_tokenizer_falls_back_and_says_so(tmp_path):
    from omnidlm import systems

    path = Path(shutil.copytree(SHIPPED, tmp_path / "ckpt"))
    (path / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match="ships no tokenizer.json: using the character tokenizer"):
        systems.open(path)


def test_checks_cost_nothing_on_a_good_checkpoint():
    from omnidlm import load

    model = load(SHIPPED)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_convert_force_replaces_only_what_it_writes(tmp_path, capsys):
    dst = tmp_path / "dst"
    assert main(["convert", str(SHIPPED), str(dst), "--format", "llada", "--shard-size-mb", "1"]) == 0
    assert (dst / "model.safetensors.index.json").is_file()
    (dst / "NOTES.md").write_text("mine")
    assert main(["convert", str(SHIPPED), str(dst), "--format", "omnidlm", "--force"]) == 0
    assert (dst / "NOTES.md").read_text() == "mine"  # an unrelated file stays
    assert not list(dst.glob("model-*")) and not (dst / "model.safetensors.index.json").exists()  # old shards go
    from omnidlm import load

    assert load(dst).source_format == "omnidlm"


def test_convert_refuses_the_source_as_destination(tmp_path, capsys):
    src = Path(shutil.copytree(SHIPPED, tmp_path / "src"))
    assert main(["convert", str(src), str(src), "--format", "llada", "--force"]) == 2
    assert "is the source checkpoint" in capsys.readouterr().err
    assert (src / "README.md").is_file() and (src / WEIGHTS).is_file()


def test_temp_dirs_of_a_killed_convert_are_removed(tmp_path, capsys):
    dead = tmp_path / ".dst.999999999.abc123.tmp"  # no such pid: a writer that was killed
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".dst.xyz_old.tmp").mkdir()  # the older naming, without a pid
    assert main(["convert", str(SHIPPED), str(tmp_path / "dst"), "--format", "llada"]) == 0
    assert not dead.exists() and not (tmp_path / ".dst.xyz_old.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_a_published_layout_missing_a_field_names_it(tmp_path, capsys):
    assert main(["convert", str(SHIPPED), str(tmp_path / "l"), "--format", "llada"]) == 0
    _drop_config(tmp_path / "l", "mlp_hidden_size")
    line = one_error_line(capsys, tmp_path / "l")
    assert "config.json lacks the field 'mlp_hidden_size' (llada layout)" in line
