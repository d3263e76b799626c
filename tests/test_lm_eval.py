"""The lm-eval adapter on local task files (no downloads): generation and multiple choice."""

import json
import os

import pytest

from omnidlm.data.synthetic import apply_op, heldout

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")

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


def test_adapter_scores_local_tasks(tmp_path):
    import omnidlm.eval.lm_eval_adapter  # noqa: F401  (registers the model)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(write_tasks(tmp_path)))
    out = simple_evaluate(model="omnidlm", model_args="pretrained=models/text-tiny,chat=True,mc_num=8,mc_batch=8",
                          tasks=["digitops_gen", "digitops_mc"], task_manager=tasks)
    assert out["results"]["digitops_gen"]["exact_match,none"] == 1.0
    assert out["results"]["digitops_mc"]["acc,none"] >= 5 / 6
