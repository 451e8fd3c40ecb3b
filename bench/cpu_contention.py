"""The model services' speed when their CPU is shared (a table; not a test).

CTranslate2's and PyTorch's OpenMP threads spin between parallel regions;
beside another busy process a spinning thread takes the core its sibling
needs (protos/chatbot_protos/openmp.py). This starts a private service per
OpenMP setting and measures it warm over gRPC, alone, then with one busy
process (a pure-Python loop, one core) beside it, as when the other model
service works on the same CPU:
- asr: seconds per request, a 1.4 s Spanish clip;
- chat: tokens/s of a 48-token answer of the embedded model (seeded).

    .venv/test/bin/python bench/cpu_contention.py [--service asr|chat] [--runs 3]
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
from chatbot_protos.chat.v1 import chat_pb2_grpc  # noqa: E402
from chatbot_protos.openmp import ASR_SPIN_COUNT, CHAT_SPIN_COUNT  # noqa: E402

from tests.chat.helpers import chat, user  # noqa: E402
from tests.support import audio_clips as clips  # noqa: E402
from tests.support.services import grpc_service  # noqa: E402

TIMEOUT = 600
LIBGOMP_DEFAULT = {"GOMP_SPINCOUNT": "300000"}  # libgomp's own, with OMP_WAIT_POLICY unset
SHIPPED = {"asr": ASR_SPIN_COUNT, "chat": CHAT_SPIN_COUNT}


def settings(service: str) -> dict[str, dict[str, str]]:
    """Label → environment; {} is the service as shipped (its __main__ sets the spin)."""
    other = CHAT_SPIN_COUNT if service == "asr" else ASR_SPIN_COUNT
    return {
        "libgomp default (spin 300000)": LIBGOMP_DEFAULT,
        f"shipped (spin {SHIPPED[service]})": {},
        f"GOMP_SPINCOUNT={other}": {"GOMP_SPINCOUNT": str(other)},
        "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    }


def asr_measure(address: str, runs: int):
    samples, rate = clips.wav_to_samples(clips.speak_wav("Hola, buenos días"))
    request = asr_pb2.TranscribeRequest(
        audio=clips.encode(samples, rate, "webm"), mime_type=clips.CONTAINERS["webm"].mime_type,
        options=asr_pb2.TranscriptionOptions(beam_size=5))
    channel = grpc.insecure_channel(address)
    stub = asr_pb2_grpc.TranscriptionStub(channel)

    def seconds() -> float:
        started = time.perf_counter()
        stub.Transcribe(request, timeout=TIMEOUT)
        return time.perf_counter() - started

    seconds()  # warm-up
    return lambda: [seconds() for _ in range(runs)]


def chat_measure(address: str, runs: int):
    channel = grpc.insecure_channel(address)
    stub = chat_pb2_grpc.ChatServiceStub(channel)

    def tokens_per_s() -> float:
        started = time.perf_counter()
        _, final = chat(stub, user("Escribe una historia larga sobre un gato."), max_tokens=48, seed=1,
                        timeout=TIMEOUT)
        return final.completion_tokens / (time.perf_counter() - started)

    tokens_per_s()  # warm-up
    return lambda: [tokens_per_s() for _ in range(runs)]


MEASURES = {"asr": (asr_measure, "s per request"), "chat": (chat_measure, "tokens/s")}


def beside_a_busy_process(fn):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        return fn()
    finally:
        busy.kill()
        busy.wait()


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({' '.join(f'{v:.2f}' for v in values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=sorted(MEASURES), default="asr")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    measure, unit = MEASURES[args.service]
    print(f"{args.service}: {unit}, median (all) of {args.runs} warm requests")
    print(f"{'OpenMP setting':32} {'alone':34} beside a busy process")
    with tempfile.TemporaryDirectory() as scratch:
        for number, (label, env) in enumerate(settings(args.service).items()):
            log_dir = Path(scratch) / str(number)
            log_dir.mkdir()
            extra = {"ASR_WORKERS": "1"} if args.service == "asr" else {}
            with grpc_service(args.service, log_dir, {**extra, **env}, timeout=TIMEOUT) as (_, address):
                run = measure(address, args.runs)
                alone = run()
                shared = beside_a_busy_process(run)
            print(f"{label:32} {fmt(alone):34} {fmt(shared)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
