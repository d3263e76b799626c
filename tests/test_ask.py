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
