"""One process, one GPU: `python -m trainer` started without a launcher on a
host where several GPUs are visible keeps to the first (TRL refuses the
DataParallel that transformers would otherwise use) and says how to use them
all; under a launcher (WORLD_SIZE set) it leaves the GPUs alone.

This machine has no GPU, so the GPUs are named by CUDA_VISIBLE_DEVICES (the
NVML count used when it is unset was checked on a 2 x H200 host:
bench/results/trainer_ddp_h200x2_2026-11-28.txt). The run stops right after,
on a missing dataset file, before any model loads.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.trainer.conftest import ROOT, TRAINER_PYTHON

CPU_CONFIG = ROOT / "trainer" / "configs" / "cpu-smollm2-chatterbot.yaml"
KEPT = "GPUs are visible but the trainer was not started by a launcher"


def start(tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "CUDA_VISIBLE_DEVICES")}
    environment.update(env)
    command = [str(TRAINER_PYTHON), "-m", "trainer", "--config", str(CPU_CONFIG), "--adapters_dir",
               str(tmp_path / "adapters"), "--dataset", str(tmp_path / "missing.jsonl")]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_without_a_launcher_the_first_of_several_gpus_is_kept_with_a_hint(tmp_path):
    result = start(tmp_path, CUDA_VISIBLE_DEVICES="3,5")
    assert result.returncode == 1 and "does not exist" in result.stderr, result.stderr[-2000:]
    assert f"2 {KEPT}: training on GPU 3 alone" in result.stderr, result.stderr[-2000:]
    assert "accelerate launch --num_processes 2 -m trainer" in result.stderr


@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "3,5", "WORLD_SIZE": "2"}, {"CUDA_VISIBLE_DEVICES": "1"}],
                         ids=["under-a-launcher", "one-gpu"])
def test_a_launcher_or_a_single_gpu_is_left_alone(env, tmp_path):
    result = start(tmp_path, **env)
    assert result.returncode == 1 and "does not exist" in result.stderr, result.stderr[-2000:]
    assert KEPT not in result.stderr
