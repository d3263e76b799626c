"""`omnidlm ask` contracts on the shipped omni models: a model that sees needs --image; a Uni answer
with images prints `{"text": ..., "images": [paths]}` under --json."""

import json
from pathlib import Path

from omnidlm.cli import main

LLADAO = Path(__file__).parents[1] / "models" / "lladao-digits"
UNI = Path(__file__).parents[1] / "models" / "uni-digits"


def test_lladao_without_image_says_an_image_is_needed(capsys):
    assert main(["ask", "--model", str(LLADAO), "What digit is shown?"]) == 2
    assert "give --image" in capsys.readouterr().err


def test_uni_answer_with_images_is_text_and_paths(tmp_path, capsys):
    assert main(["ask", "--model", str(UNI), "Draw the digit after 6. Think first.", "--out", str(tmp_path),
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    answer = json.loads(lines[0])
    assert set(answer) == {"text", "images"} and "[image]" in answer["text"]
    assert answer["images"] and all(Path(p).is_file() and Path(p).parent == tmp_path for p in answer["images"])


def test_not_a_model_directory_is_named(tmp_path, capsys):
    assert main(["ask", "--model", str(tmp_path), "--image", "x.png", "Q?"]) == 2
    assert "not a LLaDA-V, LLaDA-o or LLaDA2.0-Uni model" in capsys.readouterr().err


# --- the published LLaDA-o checkpoint (tests/data/fixtures/lladao-tiny) --------------------------------

LLADAO_TINY = Path(__file__).parent / "data" / "fixtures" / "lladao-tiny"


def published_image(tmp_path) -> Path:
    """The fixture's understanding image as a PNG: its pixels are the recorded uint8 ones."""
    import numpy as np
    from PIL import Image

    from conftest import reference

    pixels = np.array(reference("lladao-tiny")["understanding_train"]["pixel_uint8_hwc"], dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path


def test_lladao_published_chats_give_the_recorded_ids(tmp_path, capsys):
    from conftest import reference

    recorded = reference("lladao-tiny")["understanding_generate"]
    base = ["ask", "--model", str(LLADAO_TINY), "--image", str(published_image(tmp_path)), "--prompt-ids",
            "441,14,125,125", "--gen-length", "8", "--block-length", "4", "--steps", "8", "--temperature", "0", "--json"]
    for name, knobs in [("chat_no_cache", ["--policy", "fixed", "--cache", "none"]),
                        ("chat_block_cache", ["--policy", "threshold", "--threshold", "0.95", "--cache", "exact"])]:
        assert main(base + knobs) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["output_ids"] == recorded[name]["output_ids"], name


def test_prompt_ids_on_the_digits_model_are_refused(tmp_path, capsys):
    assert main(["ask", "--model", str(LLADAO), "--image", str(published_image(tmp_path)), "--prompt-ids", "1,2"]) == 2
    assert "--prompt-ids is for published LLaDA-o checkpoints" in capsys.readouterr().err


def test_uni_knobs_mean_the_published_ones():
    from omnidlm import systems
    from omnidlm.systems.tasks import Question
    from omnidlm.systems.uni import sampling_config

    defaults = systems.SYSTEMS["uni"].sampling
    cfg = sampling_config(Question("Q?", gen_length=64, block_length=16, steps=16), 32, defaults)
    assert (cfg.max_new_tokens, cfg.block_length, cfg.policy.steps, cfg.policy.tau) == (64, 16, 4, 0.95)
    default = sampling_config(Question("Q?"), 32, defaults)
    assert (default.max_new_tokens, default.block_length, default.policy.steps) == (128, 32, 32)
