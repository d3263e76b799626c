"""The shipped digits omni model (`models/lladao-digits`): held-out floors on a subset, `omnidlm ask`
/ `draw` / `demo` end to end, and every documented bad input giving a clear error and exit 2."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnidlm.cli import main
from omnidlm.data.digits import WORDS, digit_images

MODEL = Path(__file__).resolve().parents[1] / "models" / "lladao-digits"
pytestmark = pytest.mark.skipif(not (MODEL / "ema.safetensors").exists(), reason="models/lladao-digits not shipped")


@pytest.fixture(scope="module")
def shipped():
    from omnidlm import systems

    torch.set_num_threads(1)
    loaded = systems.open(MODEL)
    return loaded.model, loaded.tokenizer


def digit_png(tmp_path, index=0, size=32) -> Path:
    images, labels = digit_images("heldout", size)
    path = tmp_path / f"digit_{1500 + index}.png"
    Image.fromarray((images[index] * 255).astype(np.uint8), mode="L").save(path)
    return path


def test_heldout_question_accuracy_floor(shipped):
    from omnidlm.eval.omni_digits import question_accuracy

    q = question_accuracy(*shipped, limit=40, seed=1)
    assert q["accuracy"] >= 0.95, [r for r in q["rows"] if not r["ok"]]


def test_judged_drawing_accuracy_floor(shipped):
    from omnidlm.eval.omni_digits import drawing_accuracy

    d = drawing_accuracy(*shipped, per_digit=2, seed=1, steps=30)
    assert d["accuracy"] >= 0.9, d["predicted"].tolist()


def test_ask_end_to_end(tmp_path, capsys):
    assert main(["ask", "--model", str(MODEL), "--image", str(digit_png(tmp_path)), "What digit is shown?"]) == 0
    assert capsys.readouterr().out.strip() in WORDS


def test_draw_end_to_end(tmp_path, capsys):
    out = tmp_path / "drawn"
    assert main(["draw", "--model", str(MODEL), "a handwritten digit 4", "--out", str(out), "-n", "2",
                 "--seed", "3", "--steps", "5", "--cfg", "3"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and Image.open(files[0]).size == (64, 64)
    assert main(["draw", "--model", str(MODEL), "a handwritten digit 4", "--out", str(tmp_path / "one.png"),
                 "--steps", "3"]) == 0
    assert (tmp_path / "one.png").exists()


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(MODEL), "--out", str(out), "--questions", "4", "--per-digit", "1",
                 "--steps", "4"]) == 0
    text = capsys.readouterr().out
    assert "held-out question accuracy" in text and "judged drawing accuracy" in text and "seconds per image" in text
    assert "sample diversity" in text
    for name in ("drawings.png", "unmasking.gif", "unmasking.png", "table.png", "demo.json"):
        assert (out / "lladao" / name).exists(), name  # each system in its own folder
    assert Image.open(out / "lladao" / "table.png").size[0] > 100  # the table as an image beside the grids
    assert sorted(p.name for p in out.iterdir()) == ["lladao"]
    # one token per iteration: the start frame, every iteration of a three-letter answer and its EOS
    assert Image.open(out / "lladao" / "unmasking.gif").n_frames >= 5


def run_error(argv, capsys, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_bad_images(tmp_path, capsys):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello, not an image")
    run_error(["ask", "--model", str(MODEL), "--image", str(not_image), "What digit is shown?"], capsys,
              "not a PNG, JPEG, WebP or GIF image")
    full = digit_png(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full[: len(full) // 2])
    run_error(["ask", "--model", str(MODEL), "--image", str(truncated), "What digit is shown?"], capsys,
              "not a readable")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (5000, 5000)).save(bomb)  # a tiny file that decodes to 25 million pixels
    run_error(["ask", "--model", str(MODEL), "--image", str(bomb), "What digit is shown?"], capsys, "above the limit")
    run_error(["ask", "--model", str(MODEL), "--image", str(tmp_path / "missing.png"), "Q?"], capsys, "no such file")


def test_empty_prompts(tmp_path, capsys):
    run_error(["ask", "--model", str(MODEL), "--image", str(digit_png(tmp_path)), "  "], capsys, "empty")
    run_error(["draw", "--model", str(MODEL), "", "--out", str(tmp_path)], capsys, "empty")


def test_draw_with_a_model_without_generation_expert(tmp_path, capsys):
    from omnidlm.train import omni as O

    cfg = O.model_config(O.digits_lladao_tiny())
    cfg.vae = None
    O.save_omni(O.LLaDAO(cfg), tmp_path / "und-only")
    run_error(["draw", "--model", str(tmp_path / "und-only"), "a handwritten digit 1", "--out", str(tmp_path)],
              capsys, "no generation expert")


def test_sample_diversity_against_real_digits():
    from omnidlm.eval.omni_digits import sample_diversity

    real, labels = digit_images("heldout", 32)
    copies = sample_diversity(np.repeat(real[:1], 4, axis=0), [int(labels[0])] * 4)
    assert copies["drawn"] == 0.0 and copies["real"] > 0.1  # one image drawn four times: no diversity
    itself = sample_diversity(real, labels)
    assert itself["ratio"] == pytest.approx(1.0)
    assert sample_diversity(real[:10], list(range(10))) is None  # one drawing per digit: undefined
