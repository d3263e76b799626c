"""Weight-only int8 (omnidlm/nn/quantize.py): the quantised text model still answers, through
`generate --quantize int8` and as a row of the bench, measured beside the float rows."""

import json
from pathlib import Path

import pytest
from torch import nn

import omnidlm
from omnidlm.cli import main
from omnidlm.eval.bench import BenchSettings, run_bench
from omnidlm.nn.quantize import quantize_int8
from omnidlm.sequence.tokenizer import Tokenizer

MODEL = Path(__file__).resolve().parents[1] / "models/text-tiny"
PROMPT = "add1    3141592653589793238462643383279502884197169399375105820974944592................"


def test_every_linear_is_int8_and_the_float_model_is_untouched():
    model = omnidlm.load(MODEL)
    q = quantize_int8(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any(type(m) is nn.Linear for m in model.modules())


def test_generate_int8_gives_the_float_answer(capsys):
    outputs = []
    for extra in ([], ["--quantize", "int8"]):
        assert main(["generate", "--model", str(MODEL), "--prompt", PROMPT, "--json", *extra]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["text"])
    assert outputs[1] == outputs[0] == "4252603764690804349573754494380613995208270400486216931085055603"


def test_bench_adds_an_int8_row_measured_beside_the_float_rows():
    model = omnidlm.load(MODEL)
    rows = run_bench(model, Tokenizer.from_file(MODEL), BenchSettings(n=4, batch=0, quantize="int8"))
    int8 = [r for r in rows if r.get("quantize") == "int8"]
    assert len(int8) == 1 and int8[0]["forwards"] > 0
    assert int8[0]["accuracy"] == pytest.approx(1.0)
