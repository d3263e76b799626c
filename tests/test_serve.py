"""The OpenAI-compatible server end to end: the official `openai` client against a server started
on loopback with the shipped text model; errors; a bounded load test."""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

import omnidlm
from omnidlm.data.synthetic import heldout, score_exact
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.serve.app import Limits, create_app
from omnidlm.serve.testing import start_server as start

MODEL = Path(__file__).parent.parent / "models" / "text-tiny"


@pytest.fixture(scope="module")
def served():
    model, tokenizer = omnidlm.load(MODEL), Tokenizer.from_file(MODEL)
    app = create_app(model, tokenizer, "text-tiny", max_batch=8, max_queue=200, limits=Limits(max_tokens=96))
    server, url = start(app)
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    server.should_exit = True


def task(i=0):
    messages, answer = heldout(i + 1)[i]
    return messages, answer


def test_chat_answers_the_synthetic_task(served):
    _, client = served
    messages, answer = task(0)
    reply = client.chat.completions.create(model="text-tiny", messages=messages, max_tokens=96)
    assert score_exact(reply.choices[0].message.content, answer)
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens == len(answer) + 1


def test_streaming_sends_blocks_then_done(served):
    _, client = served
    messages, answer = task(1)
    chunks = list(client.chat.completions.create(model="text-tiny", messages=messages, max_tokens=96, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert score_exact(text, answer)
    assert sum(bool(c.choices[0].delta.content) for c in chunks) >= 2  # one chunk per committed block
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_stop_string_and_n(served):
    _, client = served
    messages, answer = task(2)
    prompt = Tokenizer.from_file(MODEL).decode(Tokenizer.from_file(MODEL).encode_chat(messages), skip_special_tokens=False)
    reply = client.completions.create(model="text-tiny", prompt=prompt, max_tokens=96, stop=answer[5:8], n=2)
    assert [c.text for c in reply.choices] == [answer[: answer.index(answer[5:8])]] * 2


def test_errors_are_clear_and_server_survives(served):
    url, client = served
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        client.chat.completions.create(model="text-tiny", messages=[])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="text-tiny", messages=task()[0], max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="no vision encoder"):
        client.chat.completions.create(model="text-tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    with pytest.raises(openai.BadRequestError, match="no image generator"):
        client.images.generate(model="text-tiny", prompt="a handwritten digit 3")
    assert httpx.post(url + "/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json"}).status_code == 422
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == ["text-tiny"]
    assert "omnidlm_requests_total" in httpx.get(url + "/metrics").text


def test_queue_full_gets_429_with_retry_after():
    model, tokenizer = omnidlm.load(MODEL), Tokenizer.from_file(MODEL)
    server, url = start(create_app(model, tokenizer, "t", max_batch=1, max_queue=0))
    try:
        body = {"messages": task()[0], "max_tokens": 96}
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: httpx.post(url + "/v1/chat/completions", json=body, timeout=60), range(4)))
        codes = sorted(r.status_code for r in statuses)
        assert codes[0] == 200 and 429 in codes
        assert all(r.headers.get("retry-after") == "1" for r in statuses if r.status_code == 429)
    finally:
        server.should_exit = True


def test_load_200_requests_from_16_clients_all_answered(served):
    url, _ = served
    examples = heldout(200)

    async def one(client, i):
        messages, answer = examples[i]
        r = await client.post(url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 96})
        return r.status_code, r.json()["choices"][0]["message"]["content"], answer

    async def main():
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=120) as client:
            async def bounded(i):
                async with limit:
                    return await one(client, i)
            return await asyncio.gather(*[bounded(i) for i in range(200)])

    results = asyncio.run(main())
    assert [status for status, _, _ in results] == [200] * 200
    correct = sum(score_exact(text, answer) for _, text, answer in results)
    assert correct >= 180, f"{correct}/200 exact under concurrent batching"


def test_bench_serve_reports_every_concurrency_level(tmp_path):
    from omnidlm.cli import main

    out = tmp_path / "serve.json"
    assert main(["bench", "--model", str(MODEL), "--serve", "--n", "4", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["serve_rows"]
    assert [r["concurrency"] for r in rows] == [1, 4, 8, 16, 32]
    assert all(r["ok"] == 4 and r["tokens_per_s"] > 0 for r in rows)


def test_timeout_and_body_limit():
    model, tokenizer = omnidlm.load(MODEL), Tokenizer.from_file(MODEL)
    server, url = start(create_app(model, tokenizer, "t", limits=Limits(timeout_s=0.05, max_body_bytes=10_000)))
    try:
        slow = {"messages": task()[0], "max_tokens": 140, "threshold": 1.0}  # one token per step
        r = httpx.post(url + "/v1/chat/completions", json=slow, timeout=60)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        big = httpx.post(url + "/v1/completions", content=b"x" * 20_000, headers={"content-type": "application/json"})
        assert big.status_code == 413 and "exceeds" in big.json()["error"]["message"]
    finally:
        server.should_exit = True


def test_client_that_goes_away_is_cancelled_and_frees_its_row():
    model, tokenizer = omnidlm.load(MODEL), Tokenizer.from_file(MODEL)
    app = create_app(model, tokenizer, "t", max_batch=2)
    server, url = start(app)
    scheduler = app.state.scheduler
    try:
        slow = {"messages": task()[0], "max_tokens": 140, "threshold": 1.0, "n": 2}  # one token per step
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.2 s and disconnects
            httpx.post(url + "/v1/chat/completions", json=slow, timeout=0.2)
        deadline = time.time() + 10
        while scheduler.outstanding and time.time() < deadline:
            time.sleep(0.05)
        assert scheduler.outstanding == 0 and scheduler.cancelled == 2
        assert "omnidlm_requests_cancelled_total 2" in httpx.get(url + "/metrics").text
    finally:
        server.should_exit = True
