"""`omnidlm chat` for every system: `/image FILE` for systems that see, `/draw PROMPT` for systems
that draw (the same backends as the server)."""

import base64
import io
from argparse import Namespace
from pathlib import Path

import pytest
from PIL import Image

from omnidlm.commands import chat
from omnidlm.data.digits import WORDS, digit_images
from omnidlm.sampling.policies import FixedSteps, Threshold
from omnidlm.serve.images import encode_png

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("model", ["uni-digits", "lladao-digits"])
def test_chat_sees_images_and_draws(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, labels = digit_images("heldout", size=32)
    (tmp_path / "digit.png").write_bytes(base64.b64decode(encode_png(images[2])))
    out = io.StringIO()
    args = Namespace(model=str(ROOT / "models" / model), max_tokens=64, threshold=None, device="cpu")
    lines = ["/image digit.png", "What digit is shown?", "/draw a handwritten digit 3", "/quit"]
    assert chat.run(args, lines=lines, out=out) == 0
    shown = out.getvalue().splitlines()
    assert "/image FILE" in shown[0] and "/draw PROMPT" in shown[0]
    assert shown[2] == WORDS[labels[2]], shown
    assert shown[3] == "drew draw-1.png" and Image.open(tmp_path / "draw-1.png").size[0] >= 16


def test_chat_with_llada_v_sees_and_refuses_to_draw():
    fixture = ROOT / "tests" / "data" / "fixtures" / "llada-v-tiny"
    out = io.StringIO()
    args = Namespace(model=str(fixture), max_tokens=16, threshold=None, device="cpu")
    lines = ["/draw a cat", f"/image {fixture / 'image_a.png'}", "Describe it.", "/quit"]
    assert chat.run(args, lines=lines, out=out) == 0
    shown = out.getvalue().splitlines()
    assert "/image FILE" in shown[0] and "/draw" not in shown[0]
    assert "cannot draw" in shown[1] and shown[2].startswith("attached") and len(shown) == 4


@pytest.mark.parametrize("model, policy", [(ROOT / "models" / "text-tiny", Threshold(0.9, 32)),
                                           (ROOT / "tests" / "data" / "fixtures" / "llada-v-tiny", None)])
def test_chat_decodes_as_the_server_does(model, policy):
    """The chat's rows are the server's: the system's threshold (LLaDA-V: fixed steps), or --threshold."""
    from omnidlm.serve.backends import open_backend

    backend = open_backend(str(model))
    block = backend.config.block_size
    for threshold, expected in ((None, policy or FixedSteps(block)), (0.5, Threshold(0.5, block))):
        session = chat.Session(backend, Namespace(threshold=threshold), io.StringIO())
        row = session.row(backend.chat_prompt([{"role": "user", "content": "hi"}], []))
        assert row.policy == expected and row.temperature == 0.0, (threshold, row)
