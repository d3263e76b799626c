"""The one app on the shipped LLaDA2.0-Uni digits model: image questions batched on the scheduler's
engine (and streamed), interleaved answers with images, drawings and edits, through a real
server on loopback and the official `openai` client."""

import asyncio
import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from omnidlm import systems
from omnidlm.data.digits import WORDS, digit_images
from omnidlm.eval.judge import DigitJudge
from omnidlm.serve.app import create_app
from omnidlm.serve.images import encode_png
from omnidlm.serve.testing import start_server

MODEL = "models/uni-digits"


@pytest.fixture(scope="module")
def served():
    loaded = systems.open(MODEL)
    model, tokenizer = loaded.model, loaded.tokenizer
    app = create_app(model, tokenizer, "uni-digits", max_batch=8)
    server, url = start_server(app)
    yield app, url, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    server.should_exit = True


def question(image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + encode_png(image)}},
                                         {"type": "text", "text": "What digit is shown?"}]}]


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L"), dtype=np.float32) / 255


def test_image_questions_batch_on_the_engine_and_stream(served):
    app, url, client = served
    images, labels = digit_images("heldout", size=32)
    rows = []  # the batch size of each backbone forward
    hook = app.state.server.backend.engine_model.register_forward_pre_hook(lambda m, args: rows.append(len(args[0])))

    async def ask_all():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*[http.post(url + "/v1/chat/completions", json={"messages": question(images[i])})
                                          for i in range(8)])

    replies = asyncio.run(ask_all())
    hook.remove()
    answers = [r.json()["choices"][0]["message"]["content"] for r in replies]
    assert sum(a == WORDS[label] for a, label in zip(answers, labels[:8])) >= 6, answers
    assert max(rows) >= 2  # questions shared forwards
    chunks = list(client.chat.completions.create(model="uni-digits", messages=question(images[8]), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) in WORDS


def test_interleaved_answer_holds_its_images(served):
    _, url, _ = served
    r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": "Draw the digits 3 and 5."}], "modalities": ["text", "image"]})
    message = r.json()["choices"][0]["message"]
    assert r.status_code == 200 and message["content"].count("[image]") == len(message["images"]) == 2
    assert decode(message["images"][0]["b64_json"]).ndim == 2


def test_draw_and_edit_give_judged_digits(served):
    _, url, client = served
    drawn = client.images.generate(model="uni-digits", prompt="a handwritten digit 4", n=4, extra_body={"seed": 1})
    images = np.stack([decode(d.b64_json) for d in drawn.data])
    assert DigitJudge.fit().accuracy(images, [4] * 4) >= 0.5
    source = io.BytesIO(base64.b64decode(drawn.data[0].b64_json))
    edited = client.images.edit(model="uni-digits", image=("four.png", source, "image/png"), prompt="Change the digit to 7.")
    assert decode(edited.data[0].b64_json).shape == images.shape[1:]


def test_the_server_draws_what_the_draw_command_draws(served):
    """One drawing sampler per system, with one set of defaults: the server's image is the one
    `omnidlm draw` writes for the same prompt and seed (System.draw)."""
    from omnidlm.systems.tasks import Drawing

    _, _, client = served
    loaded = systems.open(MODEL)
    drawn = client.images.generate(model="uni-digits", prompt="a handwritten digit 6", n=1, extra_body={"seed": 3})
    command = loaded.system.draw(loaded, Drawing("a handwritten digit 6", n=1, seed=3, progress=False)).images
    assert drawn.data[0].b64_json == encode_png(command[0])
