"""What the trainer's tests share: the environment a real trainer process runs in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"
CHAT_PYTHON = ROOT / ".venv" / "chat" / "bin" / "python"
PROVISION = (
    "from pathlib import Path; from vision_chat_service.embedded_model import provision; "
    "print(provision(Path('.cache/models')))"
)


@pytest.fixture(scope="session")
def trainer_env(tmp_path_factory) -> dict[str, str]:
    assert TRAINER_PYTHON.is_file(), f"{TRAINER_PYTHON} is missing: `make .venv/trainer/.installed`"
    assert CHAT_PYTHON.is_file(), f"{CHAT_PYTHON} is missing: `make venvs` (it provisions the embedded model)"
    provisioned = subprocess.run(
        [str(CHAT_PYTHON), "-c", PROVISION], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert provisioned.returncode == 0, provisioned.stderr
    model = ROOT / provisioned.stdout.strip().splitlines()[-1]
    assert (model / "config.json").is_file(), f"no checkpoint in {model}"
    environment = {key: value for key, value in os.environ.items() if key != "ADAPTERS_DIR"}
    environment.update(
        {
            "MODELS_DIR": str(model.parent),  # base_model: smollm2-135m-instruct resolves here
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("datasets-cache")),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return environment
