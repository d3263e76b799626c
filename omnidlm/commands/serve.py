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


def build_app(path: str, device: str, max_batch: int, max_queue: int, limits):
    """The app for the model at `path`: LLaDA-o layouts get the omni app, the rest the text app."""
    name = Path(path).name
    if (Path(path) / "llm_config.json").is_file():
        from ..serve.omni_app import create_omni_app
        from ..train.omni import load_omni

        model, tokenizer = load_omni(path)
        return create_omni_app(model, tokenizer, name, max_queue, limits)
    from .. import load
    from ..sequence.tokenizer import Tokenizer
    from ..serve.app import create_app

    model = load(path, device=device)
    return create_app(model, Tokenizer.from_file(path), name, max_batch, max_queue, limits)


def run(args) -> int:
    import uvicorn

    from ..serve.app import Limits

    limits = Limits(max_tokens=args.max_tokens, timeout_s=args.timeout)
    app = build_app(args.model, args.device, args.max_batch, args.max_queue, limits)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
