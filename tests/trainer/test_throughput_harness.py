"""bench/trainer_throughput.py's fairness rules, on the CPU in the trainer's
venv: the timed region starts after the warm-up steps (their time and tokens
left out), `--warmup-steps 0` times the whole epoch as before, and Liger
variants, which patch transformers for the whole process, must come last."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"

SCRIPT = r"""
import json, sys, time
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, str(Path(sys.argv[1]) / "bench"))
import trainer_throughput as bench

def walk(warmup, steps=6, tokens_per_step=100):
    watch = bench.stopwatch_callback(warmup, on_gpu=False)
    fake = SimpleNamespace(_total_train_tokens=0)
    watch.trainer = fake
    state = SimpleNamespace(global_step=0)
    watch.on_train_begin(None, state, None)
    marks = []
    for step in range(1, steps + 1):
        fake._total_train_tokens += tokens_per_step
        state.global_step = step
        before = watch.started
        watch.on_step_end(None, state, None)
        if watch.started is not before:
            marks.append(step)
    return {"marks": marks, "tokens": watch.tokens, "step": watch.step, "started": watch.started is not None}

report = {"warm": walk(3), "cold": walk(0), "short": walk(10)}
base = dict(model_dir=Path("/nonexistent"), scratch=Path("scratch"), smoke=False)
plain = bench.recipe_config("fast", {}, base["model_dir"], base["scratch"], False)
liger = bench.recipe_config("fast", {"use_liger_kernel": "true"}, base["model_dir"], base["scratch"], False)
report["liger_last"] = bench.liger_order_problem([("seed", plain), ("fast-liger", liger)])
report["liger_first"] = bench.liger_order_problem([("fast-liger", liger), ("fast", plain)])
print(json.dumps(report))
"""


def test_the_stopwatch_leaves_the_warm_up_out_and_liger_variants_come_last(tmp_path):
    result = subprocess.run(
        [str(TRAINER_PYTHON), "-c", SCRIPT, str(ROOT)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # 3 warm-up steps: the clock starts once, at the end of step 3, after 300 tokens
    assert report["warm"] == {"marks": [3], "tokens": 300, "step": 3, "started": True}, report
    # --warmup-steps 0: the clock starts with training, nothing left out (the old behaviour)
    assert report["cold"] == {"marks": [], "tokens": 0, "step": 0, "started": True}, report
    # fewer steps than the warm-up: never starts (the harness then times the whole epoch)
    assert report["short"]["started"] is False, report
    assert report["liger_last"] is None, report
    assert "fast-liger" in report["liger_first"] and "last" in report["liger_first"], report
