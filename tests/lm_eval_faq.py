"""Writes tests/data/lm-eval-smollm2-faq.json: what lm-evaluation-harness itself computes on the built-in FAQ task
(web/data/tasks-python-faq.jsonl) with SmolLM2-135M (the f32 HF folder models/smollm2/fetch makes), through its
own task machinery: a `multiple_choice` task over the JSONL file, zero-shot, `target_delimiter: ""` (our choices
carry their leading space), metrics `acc` and `acc_norm` with their standard errors, and every choice's
log-likelihood from the `hf` model on the CPU in f32. tests/smollm2.rs compares prunelab with it.
Needs lm-eval with its `hf` extra (0.4.13 with transformers 5.24 and torch made the file):
`python tests/lm_eval_faq.py [MODEL_DIR [OUT_JSON]]` (benches/lm_eval_pruned.sh scores a pruned model so)."""
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.join(here, "..")
model = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "models", "smollm2-135m"))
tasks = os.path.abspath(os.path.join(repo, "web", "data", "tasks-python-faq.jsonl"))
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "data", "lm-eval-smollm2-faq.json")

TASK = f"""task: prunelab_python_faq
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tasks}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

torch.set_num_threads(os.cpu_count() or 1)
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "prunelab_python_faq.yaml"), "w") as f:
        f.write(TASK)
    result = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32,device=cpu",
        tasks=["prunelab_python_faq"],
        task_manager=TaskManager(include_path=tmp),
        num_fewshot=0,
        batch_size=8,
        log_samples=True,
    )

metrics = result["results"]["prunelab_python_faq"]
samples = sorted(result["samples"]["prunelab_python_faq"], key=lambda s: s["doc_id"])
log_likelihoods = [[float(r[0][0]) for r in s["resps"]] for s in samples]
golden = {
    "made_by": "tests/lm_eval_faq.py",
    "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "unknown",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "model": "models/smollm2-135m (f32 HF folder from models/smollm2/fetch)" if len(sys.argv) < 2 else model,
    "tasks": "web/data/tasks-python-faq.jsonl",
    "items": len(samples),
    "acc": metrics["acc,none"],
    "acc_stderr": metrics["acc_stderr,none"],
    "acc_norm": metrics["acc_norm,none"],
    "acc_norm_stderr": metrics["acc_norm_stderr,none"],
    "log_likelihoods": log_likelihoods,
}
with open(out, "w") as f:
    json.dump(golden, f, indent=1)
    f.write("\n")
print(f"{out}: {len(samples)} items, acc {golden['acc']:.4f}, acc_norm {golden['acc_norm']:.4f}")
