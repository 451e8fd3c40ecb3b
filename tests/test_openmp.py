"""The model services limit OpenMP's spinning before their model library
loads libgomp (chatbot_protos/openmp.py says why, with the measurements), and
an operator's own choice wins."""

from __future__ import annotations

import os
import subprocess

import pytest

from chatbot_protos.openmp import ASR_SPIN_COUNT, CHAT_SPIN_COUNT
from scripts.stack import REPO

# What libgomp sees: the variables at the moment the model library (which
# loads libgomp) is first imported, after the service's entry module.
PROBE = """
import builtins, os, sys
library, entry = sys.argv[1:]
seen = []
real_import = builtins.__import__

def watching(name, *args, **kwargs):
    if name.split(".")[0] == library and library not in sys.modules and not seen:
        seen.append(os.environ.get("GOMP_SPINCOUNT", "-") + " " + os.environ.get("OMP_WAIT_POLICY", "-"))
    return real_import(name, *args, **kwargs)

builtins.__import__ = watching
__import__(entry)
__import__(library)  # the ASR engine imports it only when it loads the model
print(seen[0])
"""

SERVICES = {
    "asr": ("ctranslate2", "asr_service.__main__", ASR_SPIN_COUNT),
    "chat": ("torch", "vision_chat_service.__main__", CHAT_SPIN_COUNT),
}


def seen_at_load(service: str, **env: str) -> str:
    library, entry, _ = SERVICES[service]
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([str(REPO / ".venv" / service / "bin" / "python"), "-c", PROBE, library, entry],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("service", SERVICES)
def test_the_model_library_loads_with_the_services_short_spin(service):
    assert seen_at_load(service) == f"{SERVICES[service][2]} -"


@pytest.mark.parametrize("env, expected", [
    ({"GOMP_SPINCOUNT": "50000"}, "50000 -"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "- PASSIVE"),
])
def test_the_operators_own_setting_wins(env, expected):
    assert seen_at_load("asr", **env) == expected
