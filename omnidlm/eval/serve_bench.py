"""Server benchmark: requests/s and tokens/s at several client concurrencies, all against one
server started on loopback in this process (`omnidlm bench --serve`). The clients run in a process
of their own, as a server's clients do: in the server's process they would take turns with its
event loop and engine on one interpreter lock, more so the more clients there are.

Every level sends the same held-out requests: synthetic text prompts for text systems, questions
about held-out digit images ("What digit is shown?") for systems that see. A row counts completion
tokens as the server reports them (EOS excluded) and the exact-match accuracy of the answers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import httpx

from ..data.synthetic import heldout, score_exact


async def _load(url: str, examples, concurrency: int, max_tokens: int | None) -> dict:
    limit = asyncio.Semaphore(concurrency)
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(messages, answer):
            async with limit:
                r = await client.post(url + "/v1/chat/completions", json={"messages": messages, **extra})
            body = r.json()
            text = body["choices"][0]["message"]["content"] if r.status_code == 200 else ""
            tokens = body.get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
            return r.status_code == 200, score_exact(text, answer), max(tokens - 1, 0)

        start = time.perf_counter()
        results = await asyncio.gather(*[one(m, a) for m, a in examples])
        seconds = time.perf_counter() - start
    ok, correct, tokens = (sum(col) for col in zip(*results))
    return {"concurrency": concurrency, "requests": len(examples), "ok": ok, "accuracy": correct / len(examples),
            "requests_per_s": len(examples) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}


def _run_level(url: str, examples, concurrency: int, max_tokens: int | None) -> dict:
    """One level, in the clients' process."""
    return asyncio.run(_load(url, examples, concurrency, max_tokens))


def bench_serve(model, tokenizer, levels=(1, 4, 8, 16, 32), requests_per_level: int = 32, max_tokens: int = 96) -> list[dict]:
    """Start a server on a free loopback port, load it at each concurrency level, stop it."""
    from ..serve.app import create_app
    from ..serve.testing import start_server

    app = create_app(model, tokenizer, "bench", max_batch=max(levels), max_queue=requests_per_level)
    server, url = start_server(app)
    try:
        sees = "see" in app.state.server.backend.capabilities
        examples = image_questions(requests_per_level) if sees else heldout(requests_per_level)
        if sees:
            max_tokens = None  # the system's own answer length
        with multiprocessing.get_context("spawn").Pool(1) as clients:
            clients.apply(_run_level, (url, examples[:2], 1, max_tokens))  # warm-up
            return [clients.apply(_run_level, (url, examples, c, max_tokens)) for c in levels]
    finally:
        server.should_exit = True


def image_questions(n: int) -> list[tuple[list[dict], str]]:
    """(messages, expected answer) of n questions about held-out digit images."""
    from ..data.digits import WORDS, digit_images
    from ..serve.images import encode_png

    images, labels = digit_images("heldout", size=32)
    out = []
    for i in range(n):
        url = "data:image/png;base64," + encode_png(images[i % len(images)])
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What digit is shown?"}]
        out.append(([{"role": "user", "content": content}], WORDS[labels[i % len(labels)]]))
    return out


def format_table(rows: list[dict]) -> str:
    head = f"{'clients':>7} {'requests':>8} {'ok':>4} {'accuracy':>8} {'req/s':>7} {'tokens/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['concurrency']:>7} {r['requests']:>8} {r['ok']:>4} {r['accuracy']:>8.3f} "
                     f"{r['requests_per_s']:>7.2f} {r['tokens_per_s']:>9.1f}")
    return "\n".join(lines)
