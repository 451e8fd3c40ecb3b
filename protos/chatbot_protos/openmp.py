"""How long the model services' OpenMP threads spin before they sleep.

CTranslate2 (the ASR) and PyTorch (the embedded chat model) run each model
step on OpenMP threads (libgomp). Between parallel regions an idle thread
spins, by libgomp's default for 300,000 rounds, waiting for the next region.
When the cores are also busy with something else (the other model service
on the same CPU, a build, a neighbour), a spinning thread takes the core its
sibling needs, and every region's barrier waits for a thread that is not
running. On the 2-core dev machine, beside one busy process (a Python loop;
bench/cpu_contention.py, results in bench/results/cpu_contention_*):

  ASR, 1.4 s Spanish clip over gRPC, beam 5, median of 5 warm requests:
    libgomp default (spin 300000)   2.57 s alone   68.7 s (48-128 s) beside it
    GOMP_SPINCOUNT=1000 (ASR's)     2.65 s          5.06 s
    OMP_WAIT_POLICY=PASSIVE         2.87 s          4.17 s
  chat, SmolLM2-135M over gRPC, 48 tokens, tokens/s, median of 3 requests:
    libgomp default (spin 300000)   16.5 alone   1.05 beside it
    GOMP_SPINCOUNT=10000 (chat's)   15.7         7.8
    GOMP_SPINCOUNT=1000             15.0        10.2
    OMP_WAIT_POLICY=PASSIVE         15.2        10.6
  (alone, the same requests vary by about 10 % from run to run).

A short spin costs nothing measurable alone and avoids the collapse. For
chat, whose speed alone matters most, 10000 keeps closest to the default
alone (1000 and PASSIVE lost 4-12 % in three runs) and still avoids 7/8 of
the collapse. libgomp reads its variables once, when it is loaded: this must run
before anything imports ctranslate2 or torch. A value the operator set wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ASR_SPIN_COUNT = 1000
CHAT_SPIN_COUNT = 10_000


def limit_spinning(spin_count: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Sets GOMP_SPINCOUNT unless the operator did (or chose OMP_WAIT_POLICY)."""
    if "OMP_WAIT_POLICY" not in environ:
        environ.setdefault("GOMP_SPINCOUNT", str(spin_count))
