"""`omnidlm chat` (streaming in the terminal) and `omnidlm visualize` (the unmasking GIF)."""

import io
from argparse import Namespace
from pathlib import Path

from PIL import Image

from omnidlm.cli import main
from omnidlm.commands import chat
from omnidlm.data.synthetic import heldout, score_exact

MODEL = Path(__file__).parent.parent / "models" / "text-tiny"


def test_chat_streams_the_answer_and_refuses_images():
    messages, answer = heldout(1)[0]
    out = io.StringIO()
    args = Namespace(model=str(MODEL), max_tokens=96, threshold=0.9, device="cpu")
    assert chat.run(args, lines=[messages[0]["content"], "/image x.png", "/quit", "never read"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert score_exact(lines[1], answer)
    assert "text-only model" in lines[2] and len(lines) == 3


def test_visualize_writes_one_frame_per_step(tmp_path, capsys):
    messages, answer = heldout(2)[1]
    gif = tmp_path / "unmask.gif"
    assert main(["visualize", "--model", str(MODEL), messages[0]["content"], "--out", str(gif), "--threshold", "0.999"]) == 0
    steps = int(capsys.readouterr().out.split()[0])
    frames = Image.open(gif).n_frames
    assert steps >= 3 and frames == steps + 1  # the all-masked start, then every step
    assert main(["visualize", "--model", str(MODEL), " ", "--out", str(tmp_path / "x.gif")]) == 2


def test_visualize_font_has_the_mask_glyph():
    from fontTools.ttLib import TTFont

    from omnidlm.commands.visualize import MASK_GLYPH, mono_font

    font = mono_font()
    assert ord(MASK_GLYPH) in TTFont(font.path).getBestCmap()
    box = font.getmask(MASK_GLYPH)
    assert box.size[0] > 0 and box.size[1] > 0


def test_visualize_flags_are_validated(capsys):
    import pytest

    for flag, value in (("--width", "0"), ("--threshold", "nan"), ("--max-tokens", "-3")):
        with pytest.raises(SystemExit):
            main(["visualize", "--model", str(MODEL), "hi", flag, value])
        assert flag in capsys.readouterr().err
