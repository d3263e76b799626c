"""The server stays up and tells the truth: inputs that used to kill the engine thread get a 4xx
naming the field, a failure inside the worker fails only its request, a 504 frees its row (and an
omni drawing stops), a full queue is a 429 for streams too, and /metrics counts each request once
with its real status. Everything through a real server on loopback."""

import threading
import time
from pathlib import Path

import httpx
import pytest

import omnidlm
from omnidlm.data.synthetic import heldout
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.serve.app import Limits, create_app
from omnidlm.serve.testing import start_server

ROOT = Path(__file__).parent.parent
MODEL = ROOT / "models" / "text-tiny"
MESSAGES = heldout(1)[0][0]
SLOW = {"messages": MESSAGES, "max_tokens": 140, "threshold": 1.0}  # one token per step


def text_app(**kw):
    limits = kw.pop("limits", Limits())
    return create_app(omnidlm.load(MODEL), Tokenizer.from_file(MODEL), "text-tiny", limits=limits, **kw)


@pytest.fixture(scope="module")
def served():
    app = text_app()
    server, url = start_server(app)
    yield app, url
    server.should_exit = True


def chat(url, **body):
    return httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 32, **body}, timeout=60)


def counts(url, route="/v1/chat/completions") -> dict[int, int]:
    """{status: requests} of a route from /metrics."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'omnidlm_requests_total{{route="{route}"'):
            out[int(line.split('status="')[1].split('"')[0])] = int(line.split()[-1])
    return out


def wait_until(condition, timeout=30.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the server never reached the expected state"
        time.sleep(0.02)


@pytest.mark.parametrize("body, field", [
    ({"temperature": 1e-300}, "temperature"),  # NaN probabilities
    ({"messages": [{"role": "user", "content": "1" * 300}], "max_tokens": None}, "messages"),  # no room left
    ({"steps": 10**12}, "steps"),
    ({"block_length": 10**12}, "block_length"),
    ({"n": 10**6}, "n"),
])
def test_inputs_that_killed_the_worker_are_4xx_and_the_server_keeps_serving(served, body, field):
    app, url = served
    r = chat(url, **body)
    assert 400 <= r.status_code < 500 and r.json()["error"]["param"] == field, r.text
    assert field in r.json()["error"]["message"] or field == "messages"
    assert chat(url).status_code == 200
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["worker"] == "running"


def test_a_failure_inside_the_worker_fails_only_that_request(served, monkeypatch):
    from omnidlm.sampling.engine import BatchEngine

    app, url = served
    real, calls = BatchEngine.step, []

    def broken_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real(self)

    monkeypatch.setattr(BatchEngine, "step", broken_once)
    r = chat(url)
    assert r.status_code == 500 and "failed while decoding" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "server_error"
    assert chat(url).status_code == 200
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["worker"] == "running" and health["failed_requests"] >= 1



def test_deferred_prefixes_build_in_one_batch_and_a_bad_one_fails_alone():
    """The scheduler builds the deferred prefixes of the requests it takes at once with one call;
    when that call fails it builds them one by one, and only the request whose prefix fails fails."""
    import asyncio

    import torch

    from omnidlm.sampling.prefix import Deferred, Prefix
    from omnidlm.serve.scheduler import Scheduler, Settings, WorkFailed

    model, gate, calls = omnidlm.load(MODEL), threading.Event(), []

    def build(items):
        calls.append(list(items))
        if items == ["gate"]:
            gate.wait(120)  # holds the worker while the others are queued
        if "bad" in items:
            raise RuntimeError("no features for this one")
        with torch.no_grad():
            return [Prefix(model.embed(torch.tensor([[5, 6, 7]]))[0], torch.arange(3)) for _ in items]

    async def main():
        scheduler = Scheduler(model, max_batch=8)
        ask = lambda item: scheduler.submit([], Settings(max_new_tokens=8), Deferred(build, item, 3))
        tickets = [ask("gate")]
        while not calls:
            await asyncio.sleep(0.01)
        tickets += [ask("a"), ask("bad"), ask("b")]
        while scheduler.inbox.qsize() < 3:
            await asyncio.sleep(0.01)
        gate.set()
        out = []
        for ticket in tickets:
            try:
                out.append([result async for _, result in ticket.events()][-1].finish_reason)
            except WorkFailed as failure:
                out.append((failure.status, failure.message))
        return out, scheduler

    try:
        out, scheduler = asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        gate.set()
    assert calls == [["gate"], ["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert out[0] in ("eos", "length") and out[1] in ("eos", "length") and out[3] in ("eos", "length")
    assert out[2][0] == 500 and "no features for this one" in out[2][1]
    assert scheduler.prefixes_built == 3 and scheduler.failures == 1

def test_timeout_frees_the_row_and_metrics_count_real_statuses():
    app = text_app(limits=Limits(timeout_s=0.2))
    server, url = start_server(app)
    try:
        assert httpx.post(url + "/v1/chat/completions", json=SLOW, timeout=60).status_code == 504
        wait_until(lambda: app.state.scheduler.outstanding == 0 and app.state.scheduler.active_rows == 0)
        assert counts(url) == {504: 1}  # once, with its real status
    finally:
        server.should_exit = True


def test_full_queue_is_429_for_streams_too_and_active_rows_are_reported():
    app = text_app(max_batch=1, max_queue=0)
    server, url = start_server(app)
    try:
        slow = threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", json=SLOW, timeout=120))
        slow.start()
        wait_until(lambda: app.state.scheduler.active_rows == 1)
        assert "omnidlm_active_rows 1" in httpx.get(url + "/metrics").text
        for stream in (True, False):
            r = chat(url, stream=stream)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert "server busy" in r.json()["error"]["message"]
        slow.join()
        assert counts(url) == {200: 1, 429: 2}
    finally:
        server.should_exit = True


def test_a_timed_out_drawing_stops_and_frees_the_image_worker():
    from omnidlm import systems

    loaded = systems.open(ROOT / "models" / "lladao-digits")
    model, tokenizer = loaded.model, loaded.tokenizer
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    app = create_app(model, tokenizer, "lladao-digits", max_queue=0, limits=Limits(timeout_s=0.3))
    server, url = start_server(app)
    jobs = app.state.server.jobs
    try:
        body = {"prompt": "a handwritten digit 3", "steps": 100}  # 100 steps x 2 (text CFG) forwards
        r = httpx.post(url + "/v1/images/generations", json=body, timeout=60)
        assert r.status_code == 504
        wait_until(lambda: jobs.pending == 0)
        assert jobs.cancelled == 1 and len(forwards) < 200  # stopped part-way, not run to the end
        too_many = httpx.post(url + "/v1/images/generations", json={**body, "steps": 10**6}, timeout=60)
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "steps"
        assert httpx.get(url + "/health").json()["image_worker"] == "running"
    finally:
        server.should_exit = True
