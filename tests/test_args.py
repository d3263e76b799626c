"""The command line's habits: validated numeric flags (at parse time, naming the flag), defaults in
every help, --version, a clear "no GPU", default models found from any folder, text cut at EOS."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnidlm.cli import build_parser, main
from omnidlm.commands import args as A

ROOT = Path(__file__).parent.parent
TEXT = ROOT / "models" / "text-tiny"


@pytest.mark.parametrize("kind, bad, good", [
    (A.positive_int, ["0", "-1", "1.5", "x"], {"3": 3}),
    (A.nonnegative_int, ["-1", "nan"], {"0": 0}),
    (A.probability, ["-0.1", "1.5", "nan", "inf"], {"0": 0.0, "1": 1.0, "0.9": 0.9}),
    (A.nonnegative_float, ["-1", "nan", "inf", "-inf"], {"0": 0.0, "0.7": 0.7}),
    (A.positive_float, ["0", "-2", "nan"], {"1.5": 1.5}),
    (A.finite_float, ["nan", "inf"], {"-1": -1.0}),
    (A.port, ["0", "65536", "-1"], {"8000": 8000}),
    (A.seed, ["-1", str(2**64)], {"0": 0, str(2**64 - 1): 2**64 - 1}),
    (A.int_in(1, 16), ["0", "17"], {"16": 16}),
    (A.token_ids, ["1,x", "", " , ", "[]", "1.5"], {"1,2,-200,3": [1, 2, -200, 3], "[1, 2 3]": [1, 2, 3], "7": [7]}),
    (A.positive_ints, ["1,x", "", "0", "1,-8", "1.5"], {"1,8": [1, 8], "256 512": [256, 512]}),
])
def test_types_refuse_bad_values(kind, bad, good):
    import argparse

    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)
    for text, value in good.items():
        assert kind(text) == value


@pytest.mark.parametrize("argv, flag", [
    (["generate", "--model", TEXT, "--prompt", "x", "--steps", "0"], "--steps"),
    (["generate", "--model", TEXT, "--prompt", "x", "--gen-length", "-4"], "--gen-length"),
    (["generate", "--model", TEXT, "--prompt", "x", "--block-length", "0"], "--block-length"),
    (["generate", "--model", TEXT, "--prompt", "x", "--threshold", "nan"], "--threshold"),
    (["generate", "--model", TEXT, "--prompt", "x", "--threshold", "1.2"], "--threshold"),
    (["generate", "--model", TEXT, "--prompt", "x", "--temperature", "inf"], "--temperature"),
    (["generate", "--model", TEXT, "--prompt", "x", "--temperature", "-1"], "--temperature"),
    (["generate", "--model", TEXT, "--prompt", "x", "--cfg-scale", "nan"], "--cfg-scale"),
    (["generate", "--model", TEXT, "--prompt", "x", "--factor", "0"], "--factor"),
    (["bench", "--model", TEXT, "--n", "0"], "--n"),
    (["bench", "--model", TEXT, "--threshold", "2"], "--threshold"),
    (["generate", "--model", TEXT, "--prompt-ids", "1,x"], "--prompt-ids"),
    (["ask", "--model", TEXT, "--prompt-ids", "1;2"], "--prompt-ids"),
    (["draw", "--prompt-ids", ""], "--prompt-ids"),
    (["bench", "--shape", "llada-tiny", "--random-weights", "--batch-sizes", "1,0"], "--batch-sizes"),
    (["bench", "--shape", "llada-tiny", "--random-weights", "--gen-lengths", "256,x"], "--gen-lengths"),
])
def test_bad_flags_stop_at_parse_time_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err


def test_every_prompt_ids_flag_is_parsed_by_one_type():
    """`--prompt-ids` of generate, ask, draw and edit: one parser (args.token_ids), not one per command."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    takers = {name: action.type for name, command in sub.choices.items() for action in command._actions
              if "--prompt-ids" in action.option_strings}
    assert {"generate", "ask", "draw", "edit"} <= set(takers)
    assert all(kind is A.token_ids for kind in takers.values()), takers


def test_cuda_without_a_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(TEXT), "--prompt", "x", "--device", "cuda"])
    assert "there is no GPU" in capsys.readouterr().err


def test_every_flag_help_states_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    missing = []
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if action.option_strings and not action.required and action.dest != "help":
                if f"{action.option_strings[-1]}" not in text:
                    missing.append(f"{name} {action.option_strings[-1]}")
        helps = command.formatter_class(prog=name)
        for action in command._actions:
            if action.option_strings and not action.required and action.dest != "help":
                if "default" not in helps._get_help_string(action):
                    missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing, missing


def test_version(capsys):
    import omnidlm

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"omnidlm {omnidlm.__version__}"


def test_default_models_resolve_from_the_package(tmp_path):
    assert Path(A.shipped_model("lladao-digits")) == ROOT / "models" / "lladao-digits"
    # the whole command from another folder: defaults point into the package, not the cwd
    code = ("from omnidlm.cli import build_parser; a = build_parser().parse_args(['bench', '--systems', 'uni']);"
            "import os; print(os.path.isdir(a.uni_model))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.stdout.strip() == "True", out.stderr


def test_llada_text_stops_at_first_eos(capsys):
    from omnidlm.commands.generate import until_eos
    from omnidlm.data.synthetic import heldout
    from omnidlm.sequence.tokenizer import Tokenizer

    assert until_eos([5, 6, 9, 7, 9], 9) == [5, 6] and until_eos([5, 6], 9) == [5, 6]
    messages, answer = heldout(1)[0]
    argv = ["generate", "--model", str(TEXT), "--sampler", "llada", "--json", "--prompt", messages[0]["content"],
            "--gen-length", "96", "--block-length", "32", "--steps", "96"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    tok, eos = Tokenizer.from_file(TEXT), 97
    assert len(out["output_ids"]) == 96 and eos in out["output_ids"]  # the published output: EOS padding kept
    first = out["output_ids"].index(eos)
    assert out["text"] == tok.decode(out["output_ids"][:first]) and out["text"] == answer


@pytest.mark.parametrize("argv, flag", [
    (["serve", "--model", TEXT, "--port", "70000"], "--port"),
    (["serve", "--model", TEXT, "--timeout", "0"], "--timeout"),
    (["serve", "--model", TEXT, "--max-batch", "0"], "--max-batch"),
    (["chat", "--model", TEXT, "--threshold", "nan"], "--threshold"),
    (["ask", "what?", "--threshold", "2"], "--threshold"),
    (["draw", "a 7", "--scale", "0"], "--scale"),
    (["draw", "a 7", "--cfg", "inf"], "--cfg"),
    (["draw", "a 7", "-n", "0"], "-n"),
    (["demo", "--per-digit", "0"], "--per-digit"),
    (["demo", "--threshold", "nan"], "--threshold"),
])
def test_every_command_validates_its_numbers(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_omni_default_models_are_the_shipped_ones():
    from omnidlm.commands import ask, demo_uni

    assert Path(ask.DEFAULT_MODEL) == ROOT / "models" / "lladao-digits"
    assert Path(demo_uni.DEFAULT_UNI_MODEL) == ROOT / "models" / "uni-digits"
