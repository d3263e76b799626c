"""One scheduler over one engine with per-row settings, through a real server on loopback:
requests with 200 distinct sampling settings share one engine and leave the server's memory where
it was; a seeded request gives the same answer alone and inside a busy shared batch."""

import asyncio
from pathlib import Path

import httpx
import pytest

import omnidlm
from omnidlm.data.synthetic import heldout
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.serve.app import Limits, create_app
from omnidlm.serve.testing import start_server

MODEL = Path(__file__).parent.parent / "models" / "text-tiny"


@pytest.fixture(scope="module")
def served():
    app = create_app(omnidlm.load(MODEL), Tokenizer.from_file(MODEL), "text-tiny", max_batch=8,
                     max_queue=256, limits=Limits(max_tokens=96))
    server, url = start_server(app)
    yield app, url
    server.should_exit = True


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


async def send_all(url, bodies, concurrency=16):
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:
        async def one(body):
            async with limit:
                r = await client.post(url + "/v1/chat/completions", json=body)
            return r.status_code, r.json()
        return await asyncio.gather(*[one(b) for b in bodies])


def test_200_distinct_settings_share_one_engine_and_free_their_memory(served):
    app, url = served
    examples = heldout(200)
    body = lambda i, p: {"messages": examples[i][0], "max_tokens": 32, "temperature": 0.7, "top_p": p, "seed": i}
    asyncio.run(send_all(url, [body(i, 0.5) for i in range(16)]))  # warm-up
    before = rss_mib()
    results = asyncio.run(send_all(url, [body(i, 0.5 + i / 500) for i in range(200)]))  # 200 distinct top_p
    grown = rss_mib() - before
    assert [status for status, _ in results] == [200] * 200
    assert list(app.state.scheduler.engines) == [32]  # one engine, the model's block length
    assert grown < 50, f"RSS grew by {grown:.0f} MiB"


def test_a_seeded_request_gives_the_same_answer_in_any_batch(served):
    _, url = served
    examples = heldout(9)
    # a question off the training task at temperature 2: the seed decides the answer
    probe = {"messages": [{"role": "user", "content": "hello world, what is this?"}], "max_tokens": 64,
             "temperature": 2.0, "seed": 1234}
    alone = asyncio.run(send_all(url, [probe]))[0]
    others = [{"messages": m, "max_tokens": 64, "temperature": 0.5 + i / 10, "top_p": 0.9, "seed": i}
              for i, (m, _) in enumerate(examples[1:])]
    crowded = asyncio.run(send_all(url, others[:4] + [probe] + others[4:]))[4]
    assert alone[0] == crowded[0] == 200
    assert alone[1]["choices"][0]["message"]["content"] == crowded[1]["choices"][0]["message"]["content"]
    other_seed = asyncio.run(send_all(url, [{**probe, "seed": 99}] * 1))[0]
    texts = {alone[1]["choices"][0]["message"]["content"], other_seed[1]["choices"][0]["message"]["content"]}
    assert len(texts) == 2, "at temperature 2 another seed should change the answer"


def test_a_request_admitted_while_others_decode_computes_only_its_block():
    """Exact cache: a request that joins rows already decoding has its prompt blocks written by a
    prefill forward of its own, so the denoising forward holds block-length queries for every row
    (a new prompt no longer pads the decoding rows to its length), and its answer is the one it
    has alone."""
    from omnidlm.sampling.engine import BatchEngine, Request, SamplingConfig
    from omnidlm.sampling.policies import Threshold

    model, tokenizer = omnidlm.load(MODEL), Tokenizer.from_file(MODEL)
    prompts = [tokenizer.encode_chat(messages) for messages, _ in heldout(3)]
    cfg = SamplingConfig(max_new_tokens=64, block_length=32, cache="exact", policy=Threshold(1.0, 32))
    alone = BatchEngine(model, cfg, max_batch=4).run([Request(prompts[2])])[0].tokens
    engine = BatchEngine(model, cfg, max_batch=4)
    engine.add(Request(prompts[0]))
    engine.add(Request(prompts[1]))
    engine.step()  # the first two rows decode (one token per step)
    shapes = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(args[0].shape)), with_kwargs=True)
    late = engine.add(Request(prompts[2]))
    engine.step()
    hook.remove()
    assert shapes == [(1, len(prompts[2]) // 32 * 32), (3, 32)]  # its prompt blocks, then every row's block
    done = {}
    while engine.busy:
        done.update((r.id, r) for r in engine.step())
    assert done[late].tokens == alone


def test_a_server_with_graphs_gives_the_answers_of_one_without():
    """`omnidlm serve --graphs` (block steps at bucket shapes; eager on the CPU): 12 concurrent
    seeded chats, rows joining and leaving, answer as they do without graphs."""
    examples = heldout(12)
    bodies = [{"messages": m, "max_tokens": 48, "temperature": 0.5, "seed": i} for i, (m, _) in enumerate(examples)]
    answers = {}
    for graphs in (False, True):
        app = create_app(omnidlm.load(MODEL), Tokenizer.from_file(MODEL), "text-tiny", max_batch=4,
                         limits=Limits(max_tokens=96), graphs=graphs)
        server, url = start_server(app)
        try:
            results = asyncio.run(send_all(url, bodies, concurrency=6))
        finally:
            server.should_exit = True
        assert [status for status, _ in results] == [200] * 12
        answers[graphs] = [r["choices"][0]["message"]["content"] for _, r in results]
        engine = next(iter(app.state.scheduler.engines.values()))
        assert (engine.graphs is not None) == graphs and engine.cache.static == graphs
    assert answers[True] == answers[False]
