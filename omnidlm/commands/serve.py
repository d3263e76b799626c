"""`omnidlm serve --model PATH`: the OpenAI-compatible server (and the web page at /).

Once it listens it prints what it serves and where:

    serving text-tiny (understand) at http://127.0.0.1:8000, web page at /

then one access line per request (client, method, path, status, milliseconds). The Host header must
name the bound host (loopback names for a loopback bind; `--allowed-hosts` to widen it), which keeps
pages on other sites from reaching a local server through DNS rebinding.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .args import device, nonnegative_int, port, positive_float, positive_int

CAPABILITY_WORDS = {"text": "understand", "see": "see", "draw": "draw", "edit": "edit", "interleave": "interleave"}


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible HTTP API")
    p.add_argument("--model", required=True, help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port to bind (default: 8000)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="rows decoded together (default: 8)")
    p.add_argument("--max-queue", type=nonnegative_int, default=64, help="requests waiting beyond the batch before 429 (default: 64)")
    p.add_argument("--max-tokens", type=positive_int, default=1024, help="largest max_tokens a request may ask (default: 1024)")
    p.add_argument("--max-n", type=positive_int, default=8, help="largest n (choices or images) a request may ask (default: 8)")
    p.add_argument("--max-block-length", type=positive_int, default=None,
                   help="largest block_length a request may ask (default: the model's maximum length)")
    p.add_argument("--max-image-steps", type=positive_int, default=100, help="largest steps of a drawing (default: 100)")
    p.add_argument("--timeout", type=positive_float, default=120.0, help="seconds before a request gets 504 (default: 120)")
    p.add_argument("--allowed-hosts", default=None,
                   help="comma-separated Host names the server answers, '*' for any (default: the bound host; "
                        "for a loopback bind 127.0.0.1, localhost and ::1; for 0.0.0.0 or :: any)")
    p.add_argument("--device", type=device, default="cpu", help="device to run on (default: cpu)")
    p.add_argument("--graphs", action="store_true",
                   help="block steps at fixed bucket shapes over a static cache, replayed as CUDA graphs on a GPU")
    p.set_defaults(func=run)


def allowed_hosts(host: str, flag: str | None) -> tuple[str, ...] | None:
    """The Host names to answer: the flag's, else those of the bound address (None: any)."""
    from ..serve.http import LOOPBACK_HOSTS

    if flag is not None:
        names = tuple(h.strip() for h in flag.split(",") if h.strip())
        return None if "*" in names else names
    if host in ("0.0.0.0", "::", ""):
        return None  # bound on every interface on purpose: any name may reach it
    return LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else (host, *LOOPBACK_HOSTS)


def build_app(path: str, device: str, max_batch: int, max_queue: int, limits, graphs: bool = False):
    """The one app for the model at `path`, with the routes of the capabilities it has."""
    from ..serve.app import create_app
    from ..serve.backends import open_model

    app = create_app(*open_model(path, device), Path(path).name, max_batch, max_queue, limits, graphs)
    return app, app.state.server.backend.capabilities


def banner(name: str, capabilities, host: str, port: int) -> str:
    words = ", ".join(CAPABILITY_WORDS[c] for c in capabilities)
    shown = f"[{host}]" if ":" in host else host
    return f"serving {name} ({words}) at http://{shown}:{port}, web page at /"


def run(args) -> int:
    import uvicorn

    from ..serve.http import Limits

    limits = Limits(max_tokens=args.max_tokens, timeout_s=args.timeout, max_n=args.max_n,
                    max_block_length=args.max_block_length, max_image_steps=args.max_image_steps,
                    allowed_hosts=allowed_hosts(args.host, args.allowed_hosts))
    app, capabilities = build_app(args.model, args.device, args.max_batch, args.max_queue, limits, args.graphs)
    access = logging.getLogger("omnidlm.serve")
    access.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    access.addHandler(handler)
    line = banner(Path(args.model).name, capabilities, args.host, args.port)

    class Announced(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit:  # bound: say so
                print(line, flush=True)

    Announced(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)).run()
    return 0
