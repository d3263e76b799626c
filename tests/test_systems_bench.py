"""`omnidlm bench --systems`: every system's row carries its own speed claim with its accuracy
change (LLaDA-o: cached block-threshold answers against the same model run LLaDA-V style; Uni:
SPRINT), measured on a tiny --n of the shipped LLaDA-o model. No timing is asserted."""

import json
from pathlib import Path

from omnidlm import systems
from omnidlm.cli import main
from omnidlm.eval import omni_digits as E
from omnidlm.eval.systems import ROWS, SYSTEMS, format_systems

LLADAO = Path(__file__).resolve().parents[1] / "models" / "lladao-digits"
CLAIMS = ("recompute_speedup", "recompute_accuracy_change", "sprint_speedup", "sprint_accuracy_change")


def test_every_system_has_a_row_function():
    assert set(SYSTEMS) == set(ROWS) == {"lladao", "uni"} and all(callable(f) for f in ROWS.values())


def test_recompute_comparison_runs_both_samplers_on_the_same_questions():
    loaded = systems.open(LLADAO)
    r = E.recompute_comparison(loaded.model, loaded.tokenizer, limit=2, repeats=1)
    assert r["n"] == 4 and r["kinds"] == ["describe", "arithmetic"]  # 2 digits x 2 long-answer kinds
    for side in ("cached", "recompute"):
        assert 0.0 <= r[side]["accuracy"] <= 1.0 and r[side]["seconds_per_answer"] > 0
    assert r["recompute"]["forwards_per_answer"] == r["gen_length"] == 64  # fixed steps: one token per step
    assert r["cached"]["forwards_per_answer"] < r["gen_length"]  # threshold decoding stops at EOS
    assert r["accuracy_change"] == r["cached"]["accuracy"] - r["recompute"]["accuracy"] and r["speedup"] > 0


def test_bench_systems_lladao_reports_its_claim_in_json_and_table(tmp_path, capsys):
    out = tmp_path / "systems.json"
    assert main(["bench", "--systems", "lladao", "--lladao-model", str(LLADAO), "--n", "2", "--per-digit", "1",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cached vs recompute speedup" in printed and "SPRINT speedup" in printed
    (row,) = json.loads(out.read_text())["systems"]
    assert all(k in row for k in CLAIMS) and row["sprint_speedup"] is None  # LLaDA-o makes no SPRINT claim
    assert row["recompute_speedup"] > 0 and -1.0 <= row["recompute_accuracy_change"] <= 1.0
    assert 0.0 <= row["recompute"]["cached"]["accuracy"] <= 1.0 and 0.0 <= row["question_accuracy"] <= 1.0
    line = next(l for l in format_systems([row]).splitlines() if l.startswith("| lladao |"))
    assert f"| {row['recompute_speedup']:.2f}x |" in line and line.endswith("| n/a | n/a |")  # SPRINT: n/a
