"""`omnidlm generate --cache/--policy` and `omnidlm bench --json` end to end (in-process)."""

import json

import pytest
import torch

from conftest import FIXTURES, reference
from omnidlm.cli import main
from omnidlm.sampling.reference import generate_llada2



def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", range(6))
def test_generate_exact_cache_reproduces_the_llada2_sampler(case, capsys, llada2_tiny):
    g = reference("llada2-moe-tiny")["generate"][case]
    a = g["args"]
    code, out, _ = run_cli(capsys, "generate", "--model", FIXTURES / "llada2-moe-tiny", "--mask-id", 380,
                           "--prompt-ids", ",".join(map(str, g["prompt"])), "--sampler", "llada2",
                           "--cache", "exact", "--gen-length", a["gen_length"], "--block-length", a["block_length"],
                           "--steps", a["steps"], "--threshold", a["threshold"], "--json")
    assert code == 0
    result = json.loads(out)
    expected = generate_llada2(llada2_tiny, g["prompt"], gen_length=a["gen_length"], block_length=a["block_length"],
                               steps=a["steps"], threshold=a["threshold"])
    assert result["output_ids"] == expected[0].tolist()
    assert result["cache"] == "exact" and result["forwards"] > 0


def test_generate_fixed_policy_no_cache_reproduces_llada_fixture(capsys):
    g = reference("llada-tiny")["generate"][3]
    a = g["args"]
    code, out, _ = run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny", "--prompt-ids",
                           ",".join(map(str, g["prompt"])), "--policy", "fixed", "--cache", "none",
                           "--steps", a["steps"], "--gen-length", a["gen_length"], "--block-length", a["block_length"], "--json")
    assert code == 0 and json.loads(out)["output_ids"] == g["output"]


def test_generate_refuses_exact_cache_on_a_bidirectional_model(capsys):
    code, _, err = run_cli(capsys, "generate", "--model", FIXTURES / "llada-tiny", "--prompt-ids", "1,2",
                           "--cache", "exact", "--gen-length", 8, "--block-length", 4)
    assert code == 2 and "needs block-causal attention" in err and "approx" in err


def test_generate_names_valid_policies(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(FIXTURES / "llada-tiny"), "--prompt-ids", "1", "--policy", "greedy"])
    assert "fixed" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    """A random block-diffusion model with the character tokenizer (the shape of models/text-tiny)."""
    import omnidlm
    from omnidlm.config import ModelConfig
    from omnidlm.data.char_tokenizer import build_char_tokenizer, special_ids
    from omnidlm.models.backbone import Backbone

    tok = build_char_tokenizer()
    ids = special_ids(tok)
    cfg = ModelConfig(vocab_size=103, hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64,
                      max_seq_len=256, attention="block", block_size=16, **ids)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text")
    tok.save(str(root / "tokenizer.json"))
    return omnidlm.save(Backbone(cfg), root / "model", extra_files=[root / "tokenizer.json"])


def test_bench_json_schema(tiny_text_model, tmp_path, capsys):
    out_file = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "--model", tiny_text_model, "--n", 2, "--max-new-tokens", 16,
                           "--batch", 2, "--sprint", 0.75, "--json", out_file)
    assert code == 0 and "speedup" in out
    rows = json.loads(out_file.read_text())["rows"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["policy"] == "fixed" and rows[0]["cache"] == "none"
    assert {(r["policy"], r["cache"]) for r in rows} >= {("threshold", "exact"), ("factor", "exact"), ("threshold", "none")}
    for r in rows:
        assert {"policy", "cache", "accuracy", "tokens_per_forward", "tokens_per_s", "speedup"} <= set(r)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["tokens_per_s"] > 0 and r["tokens_per_forward"] > 0
        assert r["policy"] in ("fixed", "threshold", "factor") and r["cache"] in ("none", "exact", "approx")
    # the one-token-per-step rows decode the same tokens: same forwards with and without cache
    by_name = {r["name"]: r for r in rows}
    assert by_name["fixed/exact"]["tokens"] == rows[0]["tokens"]
    assert by_name["fixed/exact"]["accuracy"] == rows[0]["accuracy"]


def test_bench_bad_input(capsys, tiny_text_model):
    with pytest.raises(SystemExit):  # argparse stops at the flag and names it
        run_cli(capsys, "bench", "--model", tiny_text_model, "--n", 0)
    assert "argument --n: must be a positive integer" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "bench", "--model", FIXTURES / "llada-tiny")
    assert code == 2 and "tokenizer" in err
