"""The shape benchmark (omnidlm/eval/shapes.py): forwards of every kind run, their ceilings count the
forward's own products, and the command writes its JSON. Nothing here asserts a time."""

import json

import pytest
import torch

from omnidlm.cli import main
from omnidlm.eval import generation, shapes


def test_ceiling_counts_every_weight_product_of_a_full_forward():
    model = shapes.random_model("llada-tiny")
    s = shapes.forward_shapes("full canvas", 2, prompt=8, answer=32, block=16)
    products = sum(c * 2.0 * rows * d_in * d_out for c, rows, d_in, d_out in shapes._linear_shapes(model, s))
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed."))
    assert products == 2.0 * weights * s.batch * s.queries  # every matrix once per token, nothing else


def test_forward_kinds_have_the_engine_shapes():
    assert shapes.forward_shapes("block exact", 1, 64, 256, 32).queries == 32
    assert shapes.forward_shapes("block approx", 1, 64, 256, 32).keys == 320
    refresh = shapes.forward_shapes("refresh", 1, 64, 256, 32)
    assert (refresh.queries, refresh.head, refresh.cached) == (320, 32, True)


def test_cached_forwards_give_the_logits_of_the_uncached_canvas_forward():
    model = shapes.random_model("llada-tiny")
    s = shapes.forward_shapes("refresh", 1, 8, 32, 16)
    torch.manual_seed(0)
    logits = shapes.model_forward(model, s)().logits  # (1, 16, V) at the last block
    torch.manual_seed(0)
    full = shapes.model_forward(model, shapes.forward_shapes("full canvas", 1, 8, 32, 16))().logits
    torch.testing.assert_close(logits, full[:, -16:], atol=1e-4, rtol=1e-4)


def test_bench_shape_command_writes_every_kind_and_the_growth_table(tmp_path, capsys):
    out = tmp_path / "shape.json"
    assert main(["bench", "--shape", "llada-tiny", "--random-weights", "--repeats", "1", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    rows = written["rows"]
    assert [r["kind"] for r in rows] == list(shapes.KINDS)
    assert all(r["ms"] > 0 and r["ceiling_ms"] > 0 for r in rows)
    gen = {r["name"]: r for r in written["generation"]}  # prompt 64, answer 256, block 32, 8 steps
    assert list(gen) == ["generation approx", "step approx", "generation exact", "step exact"]
    assert gen["generation approx"]["forwards"] == 8 * 8 and gen["step approx"]["forwards"] == 8 * 7
    assert gen["generation exact"]["forwards"] == 8 * 8  # the prompt fills whole blocks
    assert all(r["ms"] > 0 and r["ceiling_ms"] > 0 and r["fraction"] > 0 for r in gen.values())
    assert main(["bench", "--shape", "llada-tiny", "--random-weights", "--repeats", "1", "--gen-lengths", "32,64",
                 "--prompt-lengths", "8", "--json", str(out)]) == 0
    growth = json.loads(out.read_text())["growth"]
    assert [(g["prompt"], g["answer"]) for g in growth] == [(8, 32), (8, 64)]
    assert "exact ms/token" in capsys.readouterr().out


def test_bench_shape_refuses_without_random_weights_and_a_missing_gpu(capsys):
    assert main(["bench", "--shape", "llada-tiny"]) == 2
    assert "--random-weights" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # --device is checked at parse time (commands/args.py)
            main(["bench", "--shape", "llada-tiny", "--random-weights", "--device", "cuda"])
        assert "no GPU" in capsys.readouterr().err


def test_a_generation_records_the_shape_of_every_forward_it_ran():
    """cache "approx": per block one refresh of the whole canvas and block-only steps over it;
    cache "exact" (block layout): [cached | block] forwards whose keys grow block by block."""
    model = shapes.random_model("llada-tiny")
    prompts = [list(range(3, 11))]  # 8 tokens: block 0 holds them with 8 masks
    approx = generation.timed_generation(generation.generation_engine(model, "approx", "full", 1, 32, 16, 4), prompts)
    got = [(s.queries, s.keys, s.head, s.masked) for s in approx["forwards"]]
    assert got == ([(40, 40, 16, False)] + [(16, 40, 16, False)] * 3) * 2
    exact = generation.timed_generation(generation.generation_engine(model, "exact", "block", 1, 32, 16, 4), prompts)
    got = [(s.queries, s.keys, s.masked) for s in exact["forwards"]]
    # block 0 (8 masks, 4 per step): 2 steps; blocks 1 and 2: the previous block's final keys then 3 block steps
    assert got == [(16, 16, False), (16, 16, False), (32, 32, True), (16, 32, False), (16, 32, False),
                   (16, 32, False), (32, 48, True), (16, 48, False), (16, 48, False), (16, 48, False)]
    assert len(exact["steps"]) == len(exact["forwards"]) and exact["seconds"] > 0


def test_block_steps_count_the_median_step_of_each_shape_and_keep_the_sum():
    """A step slowed 10x (another process) moves the sum, not the median: per shape, count x median."""
    a, b = (generation.Shape("forward", 1, 16, keys, 16, True, False) for keys in (40, 48))
    refresh = generation.Shape("forward", 1, 40, 40, 16, True, False)
    steps = [(0.5, [(refresh, 0.4)])] + [(0.2, [(a, 0.1)])] * 2 + [(2.0, [(a, 1.0)])] + [(0.3, [(b, 0.2)])] * 3
    run = {"seconds": 4.0, "steps": steps, "forwards": [f[0][0] for _, f in steps]}
    out = generation._summary(run, {refresh: 0.3, a: 0.05, b: 0.1}, block=16)
    assert out["n_steps"] == 6 and out["step_ceiling"] == pytest.approx(3 * 0.05 + 3 * 0.1)
    assert out["step_forward"] == pytest.approx(3 * 0.1 + 3 * 0.2) and out["step"] == pytest.approx(3 * 0.2 + 3 * 0.3)
    assert out["step_forward_sum"] == pytest.approx(1.2 + 0.6) and out["step_sum"] == pytest.approx(2.4 + 0.9)


def test_bench_shape_with_int8_times_int8_against_float_generations(tmp_path):
    out = tmp_path / "shape.json"
    assert main(["bench", "--shape", "llada-tiny", "--random-weights", "--repeats", "1", "--prompt-length", "8",
                 "--gen-length", "32", "--block-length", "16", "--steps", "4", "--quantize", "int8",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["int8"]
    assert [r["name"] for r in rows] == ["int8 approx", "int8 exact"]
    assert all(r["ms"] > 0 and r["float_ms"] > 0 and 0 <= r["token_match"] <= 1 for r in rows)


def test_bench_shape_with_graphs_times_bucket_steps_against_eager(tmp_path):
    out = tmp_path / "shape.json"
    assert main(["bench", "--shape", "llada-tiny", "--random-weights", "--repeats", "1", "--prompt-length", "8",
                 "--gen-length", "32", "--block-length", "16", "--steps", "4", "--graphs", "--json", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["graphs"]}
    assert list(rows) == ["graphs approx", "graphs exact"]
    # the one-block forwards of test_a_generation_records_the_shape_of_every_forward_it_ran
    assert rows["graphs approx"]["block_steps"] == 6 and rows["graphs exact"]["block_steps"] == 8
    for r in rows.values():  # on the CPU the bucket steps run eagerly: nothing replayed, the same tokens
        assert r["ms"] > 0 and r["eager_ms"] > 0 and r["step_ms"] > 0 and r["replayed_steps"] == 0
        assert r["token_match"] == 1.0
