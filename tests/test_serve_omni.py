"""The server on the shipped LLaDA-o digits model: chat about an image, draw, edit, and errors,
through the official `openai` client."""

import base64
import io

import numpy as np
import openai
import pytest
from PIL import Image

from omnidlm.data.digits import WORDS, digit_images
from omnidlm.eval.judge import DigitJudge
from omnidlm.serve.app import Limits, create_app
from omnidlm.serve.images import encode_png
from omnidlm.serve.testing import start_server
from omnidlm import systems

MODEL = "models/lladao-digits"


@pytest.fixture(scope="module")
def served():
    loaded = systems.open(MODEL)
    model, tokenizer = loaded.model, loaded.tokenizer
    server, url = start_server(create_app(model, tokenizer, "lladao-digits", limits=Limits(max_image_pixels=512 * 512)))
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0), model
    server.should_exit = True


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + encode_png(image)


def test_chat_about_an_image_answers_with_a_digit_word(served):
    _, client, _ = served
    images, _ = digit_images("heldout", size=32)
    reply = client.chat.completions.create(model="lladao-digits", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(images[0])}},
        {"type": "text", "text": "What digit is shown?"}]}])
    assert reply.choices[0].message.content in WORDS
    stream = list(client.chat.completions.create(model="lladao-digits", stream=True, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(images[1])}}, {"type": "text", "text": "What digit is shown?"}]}]))
    assert "".join(c.choices[0].delta.content or "" for c in stream) in WORDS


def decode(item) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("L"), dtype=np.float32) / 255


def test_draw_and_edit_give_judged_digits(served):
    _, client, model = served
    size = f"{decode_one_size(model)}x{decode_one_size(model)}"
    drawn = client.images.generate(model="lladao-digits", prompt="a handwritten digit 4", n=2, size=size,
                                   extra_body={"seed": 1})
    images = np.stack([decode(d) for d in drawn.data])
    assert images.shape[0] == 2 and DigitJudge.fit().accuracy(images, [4, 4]) >= 0.5
    source = io.BytesIO(base64.b64decode(drawn.data[0].b64_json))
    edited = client.images.edit(model="lladao-digits", image=("four.png", source, "image/png"),
                                prompt="a handwritten digit 7")
    assert decode(edited.data[0]).shape == images.shape[1:]


def decode_one_size(model) -> int:
    from omnidlm.sampling.omni import model_image_size

    return model_image_size(model)


def test_bad_images_and_sizes_are_clear_400s(served):
    _, client, _ = served
    with pytest.raises(openai.BadRequestError, match="not a PNG, JPEG, WebP or GIF image"):
        client.chat.completions.create(model="lladao-digits", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"nope").decode()}}]}])
    bomb = Image.new("L", (1024, 1024))
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    with pytest.raises(openai.BadRequestError, match="above the limit"):
        client.chat.completions.create(model="lladao-digits", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}}]}])
    with pytest.raises(openai.BadRequestError, match="size"):
        client.images.generate(model="lladao-digits", prompt="a handwritten digit 1", size="1024x1024")
    with pytest.raises(openai.UnprocessableEntityError, match="prompt"):
        client.images.generate(model="lladao-digits", prompt="")


def test_image_questions_batch_on_the_engine(served):
    import asyncio

    import httpx

    url, _, model = served
    images, labels = digit_images("heldout", size=32)
    rows = []  # the batch size of each language-model forward
    hook = model.language_model.register_forward_pre_hook(
        lambda m, args, kw: rows.append(len(kw["inputs_embeds"] if kw.get("inputs_embeds") is not None else args[0])),
        with_kwargs=True)

    async def ask_all():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*[http.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(images[i])}},
                {"type": "text", "text": "What digit is shown?"}]}], "n": 2}) for i in range(6)])

    replies = asyncio.run(ask_all())
    hook.remove()
    answers = [[c["message"]["content"] for c in r.json()["choices"]] for r in replies]
    assert all(a[0] == a[1] for a in answers)  # greedy: both choices agree
    assert sum(a[0] == WORDS[label] for a, label in zip(answers, labels[:6])) >= 5, answers
    assert max(rows) >= 2  # questions shared forwards


def metric(url: str, name: str) -> int:
    line = next(l for l in httpx_get(url + "/metrics").splitlines() if l.startswith(name + " "))
    return int(float(line.split()[1]))


def httpx_get(url: str) -> str:
    import httpx

    return httpx.get(url).text


def test_image_questions_of_concurrent_clients_share_one_vit_batch_and_one_engine_step():
    """The worker is held on the first question's prefix while four more clients ask; it then
    takes the four at once: ONE batched ViT build for them, and all five rows in one engine step
    (counts from /metrics, not time)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    loaded = systems.open(MODEL)
    app = create_app(loaded.model, loaded.tokenizer, "lladao-digits", max_batch=8)
    server, url = start_server(app)
    backend, scheduler = app.state.server.backend, app.state.scheduler
    gate, calls, build = threading.Event(), [], backend.prefixes

    def gated(items):  # the backend's builder, held on its first call
        calls.append(len(items))
        if len(calls) == 1:
            gate.wait(120)
        return build(items)

    def wait_for(condition):
        deadline = time.time() + 120
        while not condition():
            assert time.time() < deadline, "the server never reached the expected state"
            time.sleep(0.01)

    backend.prefixes = gated
    images, labels = digit_images("heldout", size=32)
    ask = lambda i: httpx.post(url + "/v1/chat/completions", timeout=120, json={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(images[i])}}, {"type": "text", "text": "What digit is shown?"}]}]})
    try:
        with ThreadPoolExecutor(5) as pool:
            first = pool.submit(ask, 0)
            wait_for(lambda: calls)  # the worker is inside the first build
            rest = [pool.submit(ask, i) for i in range(1, 5)]
            wait_for(lambda: scheduler.inbox.qsize() == 4)  # the four wait in the worker's inbox
            gate.set()
            replies = [f.result() for f in [first, *rest]]
        assert [r.status_code for r in replies] == [200] * 5
        answers = [r.json()["choices"][0]["message"]["content"] for r in replies]
        assert sum(a == WORDS[label] for a, label in zip(answers, labels[:5])) >= 4, answers
        assert calls == [1, 4]  # the four questions' images went through the ViT together
        assert metric(url, "omnidlm_prefix_batches_total") == 2
        assert metric(url, "omnidlm_prefixes_built_total") == 5
        assert metric(url, "omnidlm_engine_batch_max") == 5  # and all five rows shared an engine step
    finally:
        gate.set()
        server.should_exit = True

