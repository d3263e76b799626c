"""Two CPU processes (gloo, launched by torchrun exactly as a user would) against one process:
the same global batch gives the same losses under DDP and under FSDP2 (`fully_shard`)."""

import os
import subprocess
import sys

import pytest
import torch

from omnidlm.train import apply_overrides, recipe, train
from omnidlm.train import checkpoint as C

STEPS = ["max_steps=4", "save_every=2", "log_every=1", "eval_samples=0", "progress=false", "threads=1"]


def losses(out):
    return [r["loss"] for r in C.read_metrics(out) if "loss" in r]


def torchrun(out, *overrides, resume=False):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "omnidlm", "train", "--recipe", "synthetic-tiny", "--out", str(out), *STEPS, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(cmd + (["--resume"] if resume else []), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    train(apply_overrides(recipe("synthetic-tiny"), STEPS), out)
    return losses(out)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_ddp_match_one_process(one_process, tmp_path):
    torchrun(tmp_path, "parallel=ddp")
    assert len(losses(tmp_path)) == 4
    assert losses(tmp_path) == pytest.approx(one_process, abs=1e-5)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_fsdp2_match_one_process_and_resume(one_process, tmp_path):
    torchrun(tmp_path, "parallel=fsdp", "--stop-after", "2")
    torchrun(tmp_path, "parallel=fsdp", resume=True)  # sharded optimizer state gathered, saved, re-sharded
    assert losses(tmp_path) == pytest.approx(one_process, abs=1e-5)
