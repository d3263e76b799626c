"""Tensor- and expert-parallel inference (omnidlm/nn/parallel.py): two CPU processes under torchrun
(gloo), launched as a user would, give the tokens of one process, for a dense and a MoE model,
through the reference sampler and through the engine's exact cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnidlm.cli import main

ROOT = Path(__file__).resolve().parents[1]
DENSE = ["--model", str(ROOT / "models/text-tiny"), "--prompt-ids", "96,99,86,84,70,83,100,0,0,66,69,69,18,20,18,21"]
MOE = ["--model", str(ROOT / "tests/data/fixtures/llada2-moe-tiny"), "--mask-id", "380",
       "--prompt-ids", "5,17,33,2,9,100", "--block-length", "16"]


def one_process(args, capsys) -> list[int]:
    assert main(["generate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["output_ids"]


def two_processes(args) -> list[int]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "omnidlm", "generate", *args, "--json", "--tensor-parallel", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # one rank prints
    return json.loads(lines[0])["output_ids"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("args", [DENSE + ["--gen-length", "64"], MOE + ["--gen-length", "48", "--cache", "exact",
                                                                          "--policy", "threshold"]],
                         ids=["dense-reference", "moe-engine-exact"])
def test_two_processes_give_the_tokens_of_one(args, capsys):
    assert two_processes(args) == one_process(args, capsys)


def test_tensor_parallel_without_torchrun_says_how_to_start_it(capsys):
    assert main(["generate", *DENSE, "--tensor-parallel", "2"]) == 2
    assert "torchrun --nproc_per_node 2" in capsys.readouterr().err
