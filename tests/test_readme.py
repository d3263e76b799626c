"""Every Python block of README.md runs as written, from the repository's root, in a fresh interpreter.

A block that talks to `http://127.0.0.1:8000` gets the server the README starts just before it
(`omnidlm serve --model models/text-tiny --port 8000`); if port 8000 is taken on this machine the
server listens on a free port and only the port number in the block is changed.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
SERVER = "http://127.0.0.1:8000"


def free_port(preferred: int = 8000) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def run_block(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def serving(port: int):
    """The README's `omnidlm serve --model models/text-tiny --port 8000`, on `port`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "omnidlm", "serve", "--model", "models/text-tiny",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"omnidlm serve exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("omnidlm serve did not answer /health in 180 s")


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    code = BLOCKS[index]
    server = None
    if SERVER in code:
        port = free_port()
        code = code.replace(SERVER, f"http://127.0.0.1:{port}")
        server = serving(port)
    try:
        done = run_block(code)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert done.returncode == 0, f"README Python block {index} failed:\n{code}\n{done.stderr[-3000:]}"
    # the blocks' own comments say what they print: check the digits answers they promise
    if "1234567890... (70 digits" in code:
        assert "1234567890" * 7 in done.stdout, done.stdout
