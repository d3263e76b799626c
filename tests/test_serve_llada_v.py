"""The one app on the published LLaDA-V checkpoint (llada-v-tiny, random weights): a chat with an
image part is answered on the scheduler's engine exactly as `sampling/llada_v.answer` answers it."""

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from omnidlm.sampling import llada_v as V
from omnidlm.serve.app import create_app
from omnidlm.serve.backends import open_model
from omnidlm.serve.testing import start_server

FIXTURE = Path(__file__).parent / "data" / "fixtures" / "llada-v-tiny"


@pytest.fixture(scope="module")
def served():
    model, tokenizer = open_model(str(FIXTURE))
    server, url = start_server(create_app(model, tokenizer, "llada-v-tiny"))
    yield model, tokenizer, url
    server.should_exit = True


QUESTION = "Please describe the image in detail."


def chat(url, name):
    raw = (FIXTURE / name).read_bytes()
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(raw).decode()}},
        {"type": "text", "text": QUESTION}]}], "max_tokens": 16, "block_length": 16, "steps": 16}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=300)


def test_image_questions_match_the_published_sampler_alone_and_batched(served):
    model, tokenizer, url = served
    expected = {}
    for name in ("image_a.png", "image_b.png"):
        image = Image.open(FIXTURE / name).convert("RGB")
        ids = V.answer(model, tokenizer, V.prompt_ids(tokenizer, QUESTION), [image], V.sampling_config(tokenizer, 16, 16, 16))
        assert len(ids) == 16
        expected[name] = V.answer_text(tokenizer, ids)
    r = chat(url, "image_a.png")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected["image_a.png"]
    rows = []  # the batch size of each forward of the engine
    hook = model.language_model.register_forward_pre_hook(lambda m, args, kw: rows.append(len(kw["inputs_embeds"]) if
                                                          kw.get("inputs_embeds") is not None else len(args[0])),
                                                          with_kwargs=True)
    with ThreadPoolExecutor(2) as pool:  # two image questions at once
        both = dict(zip(expected, pool.map(lambda name: chat(url, name), expected)))
    hook.remove()
    assert max(rows) == 2  # they shared forwards
    assert {k: v.json()["choices"][0]["message"]["content"] for k, v in both.items()} == expected
    health = httpx.get(url + "/health").json()
    assert health["capabilities"] == ["text", "see"]


def test_graphs_are_refused_for_a_server_that_samples_without_a_cache(served):
    model, tokenizer, _ = served
    with pytest.raises(ValueError, match="--graphs runs cached block steps; llada-v-tiny's server samples without a cache"):
        create_app(model, tokenizer, "llada-v-tiny", graphs=True)
