"""How long CTranslate2's OpenMP threads spin before they sleep.

CTranslate2 runs each model step on ``cpu_threads`` OpenMP threads (libgomp).
Between parallel regions an idle thread spins, by libgomp's default for
300,000 rounds, waiting for the next region. On a machine whose cores are
also busy with something else (the chat model generating on the same CPU, a
build, a neighbour), a spinning thread takes the core its sibling needs, and
every region's barrier waits for a thread that is not running.
bench/asr_cpu_contention.py on the 2-core dev machine (1.4 s Spanish clip
over gRPC, beam 5, median of 5 warm requests; results in bench/results/):

  OpenMP setting                 alone    beside one busy process
  libgomp default (spin 300000)  2.57 s   68.7 s (48-128 s)
  GOMP_SPINCOUNT=1000 (ours)     2.65 s    5.06 s
  OMP_WAIT_POLICY=PASSIVE        2.87 s    4.17 s

A short spin costs nothing alone and avoids a collapse under load; never
spinning does a little better under load and a little worse alone.
libgomp reads its variables once, when it is loaded: this must run before
anything imports ctranslate2. A value the operator set wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = "1000"


def limit_spinning(environ: MutableMapping[str, str] = os.environ) -> None:
    """Sets GOMP_SPINCOUNT unless the operator did (or chose OMP_WAIT_POLICY)."""
    if "OMP_WAIT_POLICY" not in environ:
        environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
