"""The command line end to end (in-process through `omnidlm.cli.main`, and once as a real process)."""

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, reference
from omnidlm.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_json_equals_published_sampler(capsys):
    g = reference("llada-tiny")["generate"][2]
    a = g["args"]
    code, out, _ = run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny",
                           "--prompt-ids", ",".join(map(str, g["prompt"])), "--steps", a["steps"],
                           "--gen-length", a["gen_length"], "--block-length", a["block_length"], "--json")
    assert code == 0
    result = json.loads(out)
    assert result["output_ids"] == g["output"] and result["timings"]["generate_s"] > 0


def test_generate_llada2_output_is_cut_after_eos(capsys):
    code, out, _ = run_cli(capsys, "generate", "--model", FIXTURES / "llada2-moe-tiny", "--mask-id", 380,
                           "--prompt-ids", "1,2,3", "--gen-length", 16, "--block-length", 8, "--json")
    ids = json.loads(out)["output_ids"]
    assert code == 0 and json.loads(out)["sampler"] == "llada2"
    assert 381 not in ids[:-1] and len(ids) <= 16


def test_convert_round_trip_through_cli(tmp_path, capsys):
    assert run_cli(capsys, "convert", FIXTURES / "llada-tiny", tmp_path / "v", "--format", "llada-v")[0] == 0
    assert run_cli(capsys, "convert", tmp_path / "v", tmp_path / "o", "--format", "llada", "--shard-size-mb", 0.2)[0] == 0
    assert (tmp_path / "o" / "model.safetensors.index.json").is_file()


def test_errors_name_the_problem_and_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--model", tmp_path / "nope", "--prompt-ids", "1")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny", "--prompt", "hi")
    assert code == 2 and "no tokenizer.json" in err
    with pytest.raises(SystemExit) as stop:  # a bad flag value stops at parse time (commands/args.py)
        run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny", "--prompt-ids", "1,x")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --prompt-ids: must be comma-separated integers" in err
    code, _, err = run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny", "--prompt-ids", "1",
                           "--gen-length", 10, "--block-length", 4)
    assert code == 2 and "multiple of block_length" in err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "omnidlm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "generate" in out.stdout and "convert" in out.stdout
