"""The ASR service limits OpenMP's spinning before CTranslate2 loads
(asr_service/openmp.py says why, with the measurements), and an operator's
own choice wins."""

from __future__ import annotations

import os
import subprocess

import pytest

from scripts.stack import REPO

ASR_PYTHON = REPO / ".venv" / "asr" / "bin" / "python"

# What libgomp will see: the variables once the entry module is imported, and
# whether ctranslate2 (which loads libgomp) was already loaded by then.
PROBE = """
import os, sys
import asr_service.__main__
print(os.environ.get("GOMP_SPINCOUNT", "-"), os.environ.get("OMP_WAIT_POLICY", "-"), "ctranslate2" in sys.modules)
"""


def probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([str(ASR_PYTHON), "-c", PROBE], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_entry_module_sets_a_short_spin_before_ctranslate2_is_loaded():
    # The engine imports faster-whisper (and so ctranslate2) only when it loads the model.
    assert probe() == ["1000", "-", "False"]


@pytest.mark.parametrize("env, expected", [
    ({"GOMP_SPINCOUNT": "50000"}, ["50000", "-"]),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, ["-", "PASSIVE"]),
])
def test_the_operators_own_setting_wins(env, expected):
    assert probe(**env)[:2] == expected
