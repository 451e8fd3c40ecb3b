"""Time from launch to ready (/readyz 200 through nginx) of the native stack,
with an empty model cache (first `make run`) and with a filled one (every
later `make run`). The virtualenvs must exist (`make venvs`).

    .venv/gateway/bin/python bench/startup.py [--runs 2]

Prints one line per start and a comparison with the seed, which loaded Whisper
in a fresh process for every request (~2.5 s per transcription on these CPUs,
DESIGN.md §4) and had no readiness signal at all.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.stack import Stack, StackConfig  # noqa: E402


def time_start(models_dir: Path, run_dir: Path) -> float:
    # Auth on, as `make run` starts (the first-user bootstrap is part of the start), data in the run dir.
    stack = Stack(StackConfig.on_free_ports(run_dir, models_dir=models_dir, data_dir=run_dir / "data"))
    started = time.perf_counter()
    try:
        stack.start(timeout=900)
        return time.perf_counter() - started
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="warm starts to time (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        models = Path(scratch) / "models"
        cold = time_start(models, Path(scratch) / "run-cold")
        print(f"cold start (empty model cache: join Whisper, convert SmolLM2): {cold:6.1f} s")
        warm = [time_start(models, Path(scratch) / f"run-warm-{i}") for i in range(args.runs)]
        for i, seconds in enumerate(warm, 1):
            print(f"warm start {i} (models cached):                              {seconds:6.1f} s")
    print(f"median warm start: {statistics.median(warm):.1f} s; the cold start costs "
          f"{cold - statistics.median(warm):.1f} s more, once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
