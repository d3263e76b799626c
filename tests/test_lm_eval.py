"""The lm-eval adapter on local task files (no downloads): generation and multiple choice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnidlm.data.synthetic import apply_op, heldout

lm_eval = pytest.importorskip("lm_eval")
ROOT = Path(__file__).parent.parent

GEN_TASK = """task: digitops_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<|endoftext|>"]
  max_gen_toks: 96
metric_list:
  - metric: exact_match
"""

MC_TASK = """task: digitops_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
target_delimiter: ""
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
"""


def write_tasks(tmp_path, n=6):
    rows, mc = [], []
    for i, (messages, answer) in enumerate(heldout(n)):
        prompt = messages[0]["content"]
        rows.append({"prompt": prompt, "answer": answer})
        digits = prompt.split()[1].rstrip(".")
        wrong = apply_op("copy" if not prompt.startswith("copy") else "add1", digits)
        mc.append({"prompt": prompt, "choices": [wrong, answer] if i % 2 else [answer, wrong], "label": i % 2})
    for name, data, template in (("gen", rows, GEN_TASK), ("mc", mc, MC_TASK)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in data))
        (tmp_path / f"{name}.yaml").write_text(template.format(data=path))
    return tmp_path


def test_documented_command_runs_on_cpu(tmp_path):
    """docs/lm-eval.md's command as written (lm-eval's own default device, mc_num without mc_batch)."""
    tasks = write_tasks(tmp_path)
    args = ["--model", "omnidlm", "--model_args", "pretrained=models/text-tiny,chat=True,mc_num=8,max_gen_toks=96",
            "--tasks", "digitops_gen,digitops_mc", "--batch_size", "8", "--include_path", str(tasks),
            "--output_path", str(tmp_path / "results")]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "omnidlm.eval.lm_eval_adapter", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next((tmp_path / "results").rglob("results_*.json")).read_text())["results"]
    assert results["digitops_gen"]["exact_match,none"] == 1.0
    assert results["digitops_mc"]["acc,none"] >= 5 / 6


def test_adapter_arguments_are_checked():
    from omnidlm.eval.lm_eval_adapter import likelihood_batches, resolve_device

    assert likelihood_batches(8, None) == (8, 8) and likelihood_batches(128, None) == (128, 16)
    with pytest.raises(ValueError, match="mc_batch"):
        likelihood_batches(8, 3)
    import torch

    if not torch.cuda.is_available():
        assert resolve_device("cuda:0") == "cpu" and resolve_device(None) == "cpu"
