"""Start an app on a free loopback port in a background thread (tests and the server benchmark)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app, timeout_s: float = 30.0) -> tuple[uvicorn.Server, str]:
    """-> (server, base URL); set `server.should_exit = True` to stop it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + timeout_s
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError(f"server did not start within {timeout_s} s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"
