"""Pictures: bench's accuracy / speed sweep (one interleaved run) and tables as images."""

import json
from pathlib import Path

from PIL import Image

from omnidlm.cli import main
from omnidlm.eval.plots import table_png, tradeoff_png

MODEL = Path(__file__).parent.parent / "models" / "text-tiny"


def test_bench_sweep_draws_the_tradeoff(tmp_path, capsys):
    plot, rows_file = tmp_path / "tradeoff.png", tmp_path / "bench.json"
    assert main(["bench", "--model", str(MODEL), "--n", "2", "--max-new-tokens", "96", "--sweep",
                 "block_length=16,32", "--plot", str(plot), "--json", str(rows_file)]) == 0
    rows = json.loads(rows_file.read_text())["rows"]
    assert [r["name"] for r in rows] == ["reference", "block_length=16", "block_length=32"]
    assert [r["block_length"] for r in rows[1:]] == [16, 32]
    assert rows[2]["accuracy"] == 1.0  # the trained block length answers every example
    assert Image.open(plot).size[0] > 300


def test_sweep_and_plot_flags_are_checked(capsys):
    import pytest

    for bad in ("threshold=1.5", "steps=3", "block_length=0", "threshold="):
        with pytest.raises(SystemExit):
            main(["bench", "--model", str(MODEL), "--sweep", bad])
        assert "argument --sweep" in capsys.readouterr().err
    assert main(["bench", "--model", str(MODEL), "--plot", "x.png"]) == 2
    assert "--sweep" in capsys.readouterr().err


def test_table_png_and_tradeoff_refuse_empty_input(tmp_path):
    import pytest

    table_png([{"system": "lladao", "accuracy": 0.956, "s/answer": 0.12}], tmp_path / "t.png", title="demo")
    assert Image.open(tmp_path / "t.png").size[0] > 100
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError):
        table_png([], tmp_path / "u.png")
    with pytest.raises(ValueError, match="threshold"):
        tradeoff_png([{"name": "reference", "accuracy": 1.0, "tokens_per_s": 1.0}], "threshold", tmp_path / "v.png")
