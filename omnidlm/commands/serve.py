"""`omnidlm serve --model PATH`: the OpenAI-compatible server (and the web page at /)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible HTTP API")
    p.add_argument("--model", required=True, help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="rows decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond the batch before 429")
    p.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a request gets 504")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from .. import load
    from ..sequence.tokenizer import Tokenizer
    from ..serve.app import Limits, create_app

    model = load(args.model, device=args.device)
    tokenizer = Tokenizer.from_file(args.model)
    limits = Limits(max_tokens=args.max_tokens, timeout_s=args.timeout)
    app = create_app(model, tokenizer, Path(args.model).name, args.max_batch, args.max_queue, limits)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
