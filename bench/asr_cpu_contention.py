"""The ASR service's latency when its CPU is shared (a table; not a test).

CTranslate2's OpenMP threads spin between parallel regions; beside another
busy process a spinning thread takes the core its sibling needs
(asr-service/asr_service/openmp.py). This starts a private ASR service per
OpenMP setting and times the same short Spanish clip over gRPC, warm: alone,
then with one busy process (a pure-Python loop, one core) beside it, as when
the chat model generates on the same CPU.

    .venv/test/bin/python bench/asr_cpu_contention.py [--runs 3] [--beam 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc  # noqa: E402

from tests.support import audio_clips as clips  # noqa: E402
from tests.support.services import grpc_service  # noqa: E402

TIMEOUT = 600
# GOMP_SPINCOUNT=300000 is libgomp's own default (OMP_WAIT_POLICY unset);
# {} is the service as shipped (openmp.py sets its short spin).
SETTINGS = {
    "libgomp default (spin 300000)": {"GOMP_SPINCOUNT": "300000"},
    "service default (spin 1000)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def timed(stub, request, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        stub.Transcribe(request, timeout=TIMEOUT)
        times.append(time.perf_counter() - started)
    return times


def beside_a_busy_process(fn):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return fn()
    finally:
        busy.kill()
        busy.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--beam", type=int, default=5)
    args = parser.parse_args(argv)
    samples, rate = clips.wav_to_samples(clips.speak_wav("Hola, buenos días"))
    request = asr_pb2.TranscribeRequest(
        audio=clips.encode(samples, rate, "webm"), mime_type=clips.CONTAINERS["webm"].mime_type,
        options=asr_pb2.TranscriptionOptions(beam_size=args.beam))
    print(f"{len(samples) / rate:.1f} s Spanish clip (webm/opus), beam {args.beam}, {args.runs} warm requests each")
    print(f"{'OpenMP setting':32} {'alone: median (all), s':34} beside a busy process: median (all), s")
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in SETTINGS.items():
            log_dir = Path(scratch) / str(len(label))
            log_dir.mkdir()
            with grpc_service("asr", log_dir, {"ASR_WORKERS": "1", **env}, timeout=TIMEOUT) as (_, address), \
                    grpc.insecure_channel(address) as channel:
                stub = asr_pb2_grpc.TranscriptionStub(channel)
                stub.Transcribe(request, timeout=TIMEOUT)  # warm-up
                alone = timed(stub, request, args.runs)
                shared = beside_a_busy_process(lambda: timed(stub, request, args.runs))
            print(f"{label:32} {fmt(alone):34} {fmt(shared)}", flush=True)
    return 0


def fmt(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({' '.join(f'{t:.2f}' for t in times)})"


if __name__ == "__main__":
    sys.exit(main())
