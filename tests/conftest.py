"""Shared test fixtures: the parity checkpoints copied from shared/fixtures (read-only data), one thread,
and a sandbox for every cache and subprocess temp file (removed at the end)."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "data" / "fixtures"
SANDBOX: Path | None = None
LLADA2_MASK_ID = 380  # the llada2 fixture's config.json names no mask id; reference.json does


def pytest_configure(config):
    torch.set_num_threads(1)  # the CI machine has 2 cores shared with other work; 1 thread is faster here
    config.addinivalue_line("markers", "chromium: needs Debian's chromium and chromium-driver (skipped without)")
    sandbox_caches()


def sandbox_caches():
    """Nothing outside tmp directories: caches (HF datasets, hub, matplotlib) and the temp files of
    subprocesses (torchrun's torchelastic_* folders) go to one directory removed at the end."""
    global SANDBOX
    tempfile.gettempdir()  # pin this process's temp dir (pytest's tmp_path) before TMPDIR changes
    SANDBOX = Path(tempfile.mkdtemp(prefix="omnidlm-tests-"))
    for var, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "hf/datasets"), ("MPLCONFIGDIR", "mpl"),
                     ("TMPDIR", "tmp")):
        (SANDBOX / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(SANDBOX / sub)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_unconfigure(config):
    if SANDBOX is not None:
        shutil.rmtree(SANDBOX, ignore_errors=True)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far more steadily on a shared machine; a test
    that changes the thread count (a training recipe, say) does not leak it into the next."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def llada_tiny():
    import omnidlm

    return omnidlm.load(FIXTURES / "llada-tiny")


@pytest.fixture(scope="session")
def llada2_tiny():
    import omnidlm

    return omnidlm.load(FIXTURES / "llada2-moe-tiny", mask_id=LLADA2_MASK_ID)


@pytest.fixture(scope="session")
def llada_v_tiny():
    from omnidlm.formats.llada_v import load_llada_v

    return load_llada_v(FIXTURES / "llada-v-tiny")


def tensors_of(directory: Path, pattern: str = "*.safetensors") -> dict:
    """Every tensor in the safetensors files of a checkpoint directory."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(directory.glob(pattern)):
        out.update(load_file(f))
    return out


def same_tensors(a: dict, b: dict) -> None:
    """The same names, dtypes and values, bit for bit."""
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def reference(name: str) -> dict:
    return json.loads((FIXTURES / name / "reference.json").read_text())
