"""The ASR service's memory stays flat over 200 consecutive requests.

A leak of a few hundred KiB a request (an FFmpeg resampler or container not
freed, numpy buffers kept by a cache, gRPC messages held by a log) is
invisible in any single test and fatal after a day of dictation. This test
sends 200 real transcriptions in a row to a private service and compares the
process's resident size (VmRSS) after request 200 with that after request 20:
by then the model, the allocator's arenas, CTranslate2's scratch buffers and
the lazily loaded VAD model are warm, so growth from there on is a leak.

Honest but short: every request is real speech (espeak-ng, 0.6 s) going the
whole way (gRPC, PyAV decode, Silero VAD, Whisper encoder and decoder), in
rotating containers (webm, ogg, mp4, wav) so each decoder path is repeated
50 times; beam 1 keeps the decoder cheap. The encoder still costs its fixed
30 s window, about 1 s a request on a 2-core CPU: the test takes 3-4 minutes
there, the price of running the model 200 times.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc

from tests.support import audio_clips as clips
from tests.support.services import grpc_service

REQUESTS = 200
WARM_AFTER = 20
TOLERANCE = 0.10  # the bound: within 10 %
FORMATS = ("webm", "ogg", "mp4", "wav")
TIMEOUT = 120


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc (what ``ps`` shows as RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for pid {pid}")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    env = {"ASR_WORKERS": "1"}
    with grpc_service("asr", tmp_path_factory.mktemp("memory-asr"), env, timeout=300) as (svc, addr), \
            grpc.insecure_channel(addr) as channel:
        yield svc, asr_pb2_grpc.TranscriptionStub(channel)


def test_resident_memory_stays_flat_over_200_requests(service):
    svc, stub = service
    samples, rate = clips.wav_to_samples(clips.speak_wav("Hola, buenos días"))
    requests = [
        asr_pb2.TranscribeRequest(
            audio=clips.encode(samples, rate, fmt),
            mime_type=clips.CONTAINERS[fmt].mime_type,
            options=asr_pb2.TranscriptionOptions(beam_size=1),
        )
        for fmt in FORMATS
    ]
    pid = svc.process.pid
    started = time.perf_counter()
    rss: dict[int, int] = {0: rss_kib(pid)}
    for number in range(1, REQUESTS + 1):
        reply = stub.Transcribe(requests[number % len(requests)], timeout=TIMEOUT)
        # Every request must really run the model, or the loop proves nothing.
        assert reply.text and reply.segments, (number, reply)
        if number % 20 == 0:
            rss[number] = rss_kib(pid)
    elapsed = time.perf_counter() - started

    print(f"\n{REQUESTS} requests in {elapsed:.0f} s; VmRSS (MiB) by request: "
          + ", ".join(f"{n}: {kib / 1024:.0f}" for n, kib in rss.items()))
    warm, last = rss[WARM_AFTER], rss[REQUESTS]
    assert abs(last - warm) <= TOLERANCE * warm, (
        f"VmRSS went from {warm / 1024:.0f} MiB after request {WARM_AFTER} to "
        f"{last / 1024:.0f} MiB after request {REQUESTS}: {rss}")
    assert svc.running()
