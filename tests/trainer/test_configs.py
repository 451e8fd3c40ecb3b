"""The shipped configs: each starts with the command that runs it, comments
every knob, and is accepted by the trainer as it is (no unknown or invalid key)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"
CONFIGS = sorted((ROOT / "trainer" / "configs").glob("*.yaml"))
SHIPPED = {"seed-llama2-guanaco.yaml", "fast-llama2-guanaco.yaml", "cpu-smollm2-chatterbot.yaml",
           "llama32-vision.yaml"}


def test_the_recipes_ship():
    assert SHIPPED <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_a_config_starts_with_its_command_and_comments_every_knob(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert any("-m trainer --config" in line or "docker compose run" in line for line in header), header
    assert any(f"configs/{path.name}" in line for line in header), "the command must name this file"
    keys = [line for line in lines if line and not line.startswith((" ", "#", "-", "\t"))]
    uncommented = [line for line in keys if "#" not in line]
    assert not uncommented, f"knobs without a comment: {uncommented}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_the_trainer_accepts_the_config_as_it_is(path, tmp_path):
    result = subprocess.run(
        [str(TRAINER_PYTHON), "-m", "trainer", "--config", str(path), "--print_config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in written.items():
        assert key in resolved, key
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert float(resolved[key]) == float(value), key


def test_the_seed_recipe_keeps_the_seed_hyperparameters():
    seed = yaml.safe_load((ROOT / "trainer" / "configs" / "seed-llama2-guanaco.yaml").read_text())
    expected = {
        "base_model": "NousResearch/Llama-2-7b-chat-hf",
        "dataset": "mlabonne/guanaco-llama2-1k",
        "lora_r": 64,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "quantization": "nf4",
        "compute_dtype": "float16",
        "double_quant": False,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": True,
        "optim": "paged_adamw_32bit",
        "learning_rate": 2e-4,
        "weight_decay": 0.001,
        "max_grad_norm": 0.3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "num_train_epochs": 1,
        "train_sampling_strategy": "group_by_length",
        "fp16": False,
        "bf16": False,
    }
    differing = {key: (seed.get(key), value) for key, value in expected.items() if seed.get(key) != value}
    assert not differing, differing
