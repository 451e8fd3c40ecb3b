"""Speech-to-text latency and accuracy on this machine (a table; not a test).

Starts the native stack on free ports (scripts/stack.py, as `make run` does),
then measures, warm, for a ~3 s and a ~15 s Spanish espeak-ng clip (webm/opus,
as Chrome records):
- straight over gRPC (`Transcribe`),
- through nginx + gateway (`POST /api/transcribe`),
- the seed's way: a fresh Python process per request that loads Whisper base
  and transcribes a temp file (bench/seed_transcribe.py), in the same run;
- live dictation (`StreamingTranscribe`, chunks paced in real time): time to
  the first interim result, and from the last chunk to the final result;
- throughput with 1, 2, 4 and 8 concurrent gRPC clients (the ~3 s clip);
  with ``--batching``, only this, on two private ASR services side by side,
  ASR_BATCH_SIZE=1 (no batching) against the batched setting(s), interleaved
  so the load of other processes falls on both alike;
- word error rate of `Transcribe` on 22 Spanish sentences (normalised:
  lowercase, no punctuation, no accents).

    .venv/test/bin/python bench/asr_latency.py [--runs 10] [--seed-runs 3]
    .venv/test/bin/python bench/asr_latency.py --batching [--batch-sizes 1,4,8] [--clients 1,2,4,8] [--per-client 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc  # noqa: E402

from scripts.stack import Stack, StackConfig  # noqa: E402
from tests.support import audio_clips as clips  # noqa: E402

from tests.support.spanish_speech import SENTENCES, SHORT, word_errors  # noqa: E402

TIMEOUT = 300


def long_clip() -> tuple[np.ndarray, int]:
    """Sentences joined with short pauses until about 15 s."""
    parts, total, rate = [], 0.0, 22050
    for sentence in SENTENCES[2:]:
        samples, rate = clips.wav_to_samples(clips.speak_wav(sentence))
        parts += [samples, np.zeros(int(0.3 * rate), np.float32)]
        total += len(samples) / rate + 0.3
        if total >= 14.5:
            break
    return np.concatenate(parts), rate


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def stream_once(stub, data: bytes, seconds: float) -> tuple[float, float, str]:
    """(first interim after s, final after the last chunk s, final text), paced live."""
    pieces = [data[i:i + 2048] for i in range(0, len(data), 2048)]
    marks: dict[str, float] = {}

    def requests():
        yield asr_pb2.StreamingTranscribeRequest(config=asr_pb2.StreamingConfig(mime_type="audio/webm"))
        for piece in pieces:
            time.sleep(seconds / len(pieces))
            yield asr_pb2.StreamingTranscribeRequest(audio_chunk=piece)
        marks["last_chunk"] = time.perf_counter()

    started = time.perf_counter()
    first_interim, final_at, text = float("nan"), float("nan"), ""
    for reply in stub.StreamingTranscribe(requests(), timeout=TIMEOUT):
        now = time.perf_counter()
        if not reply.is_final and first_interim != first_interim:
            first_interim = now - started
        if reply.is_final:
            final_at, text = now, text + " " + reply.text
    return first_interim, final_at - marks["last_chunk"], text.strip()


def concurrent_clients(stub, data: bytes, clients: int, per_client: int,
                       batches: list[int] | None = None) -> tuple[int, float, list[float], int]:
    """`clients` threads each sending `per_client` requests back to back: (clients, wall s, latencies, refused).

    `batches`, if given, collects each reply's asr-batch-size trailing metadata.
    """
    latencies: list[float] = []
    refused = 0

    def client() -> None:
        nonlocal refused
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                _, call = stub.Transcribe.with_call(asr_pb2.TranscribeRequest(audio=data, mime_type="audio/webm"),
                                                    timeout=TIMEOUT)
                latencies.append(time.perf_counter() - started)
                if batches is not None:
                    batches.append(int(dict(call.trailing_metadata() or ()).get("asr-batch-size", "1")))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients, time.perf_counter() - started, latencies, refused


def batching_throughput(data: bytes, seconds: float, batch_sizes: list[int], per_client: int,
                        clients_list: tuple[int, ...] = (1, 2, 4, 8)) -> None:
    """Throughput rows for each ASR_BATCH_SIZE, on private services started side by side."""
    import contextlib
    import os

    from tests.support.services import grpc_service

    load_before = os.getloadavg()
    results: dict[int, list[tuple[tuple[int, float, list[float], int], list[int]]]] = {n: [] for n in batch_sizes}
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as services:
        stubs = {}
        for size in batch_sizes:
            env = {"ASR_BATCH_SIZE": str(size), "ASR_DEVICE": "cpu", "ASR_WORKERS": "1", "ASR_MAX_QUEUE": "8"}
            log_dir = Path(scratch) / f"batch-{size}"
            log_dir.mkdir()
            _, address = services.enter_context(grpc_service("asr", log_dir, env, timeout=600))
            channel = services.enter_context(grpc.insecure_channel(address))
            stubs[size] = asr_pb2_grpc.TranscriptionStub(channel)
        for stub in stubs.values():  # warm-up: VAD and model first passes
            stub.Transcribe(asr_pb2.TranscribeRequest(audio=data, mime_type="audio/webm"), timeout=TIMEOUT)
        # Interleaved by client count, in alternating order (1,8 then 8,1…),
        # so drifting load from other processes on a shared machine falls on
        # every setting alike.
        for index, clients in enumerate(clients_list):
            order = list(stubs.items()) if index % 2 == 0 else list(reversed(stubs.items()))
            for size, stub in order:
                batches: list[int] = []
                results[size].append((concurrent_clients(stub, data, clients, per_client, batches), batches))
    load_after = os.getloadavg()

    print(f"\nthroughput by ASR_BATCH_SIZE, {seconds:.1f} s clip over gRPC, {per_client} requests per client, "
          f"Whisper base int8 on this CPU ({_cpu()}), ASR_WORKERS=1, ASR_MAX_QUEUE=8, ASR_BATCH_WINDOW_MS=10")
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.1f}' for x in load_after)}")
    print(f"{'batch':>5} {'clients':>7} {'clips/s':>8} {'audio s/s':>9} {'p50 s':>7} {'p95 s':>7} "
          f"{'mean batch':>10}  refused")
    for index, clients in enumerate(clients_list):
        for size in batch_sizes:
            (_, wall, latencies, refused), batches = results[size][index]
            done = len(latencies)
            mean_batch = statistics.mean(batches) if batches else 0.0
            print(f"{size:>5} {clients:>7} {done / wall:8.2f} {done * seconds / wall:9.1f} "
                  f"{p(latencies, 50):7.2f} {p(latencies, 95):7.2f} {mean_batch:10.2f}  {refused}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="warm requests per clip and path")
    parser.add_argument("--seed-runs", type=int, default=3, help="fresh-process requests per clip")
    parser.add_argument("--per-client", type=int, default=4, help="requests per client in the throughput rows")
    parser.add_argument("--batching", action="store_true",
                        help="only the throughput rows, for each of --batch-sizes, on private services")
    parser.add_argument("--batch-sizes", default="1,8", help="ASR_BATCH_SIZE values compared by --batching")
    parser.add_argument("--clients", default="1,2,4,8",
                        help="client counts of the --batching rows (repeat one, e.g. 8,8,8, for repeated rows)")
    args = parser.parse_args(argv)

    if args.batching:
        samples, rate = clips.wav_to_samples(clips.speak_wav(SHORT))
        batching_throughput(clips.encode(samples, rate, "webm"), len(samples) / rate,
                            [int(n) for n in args.batch_sizes.split(",")], args.per_client,
                            tuple(int(n) for n in args.clients.split(",")))
        return 0

    short_samples, rate = clips.wav_to_samples(clips.speak_wav(SHORT))
    long_samples, long_rate = long_clip()
    clip_set = {
        "short": (clips.encode(short_samples, rate, "webm"), len(short_samples) / rate),
        "long": (clips.encode(long_samples, long_rate, "webm"), len(long_samples) / long_rate),
    }

    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        # Single-user mode (the gateway listens on loopback): no API key to pass around.
        run_dir = Path(scratch) / "run"
        stack = Stack(StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="off"))
        try:
            stack.start(timeout=900)
            url = stack.config.url + "/api/transcribe"
            with grpc.insecure_channel(f"127.0.0.1:{stack.config.asr_port}") as channel, httpx.Client() as http:
                stub = asr_pb2_grpc.TranscriptionStub(channel)

                def via_grpc(data: bytes):
                    return lambda: stub.Transcribe(asr_pb2.TranscribeRequest(audio=data, mime_type="audio/webm"),
                                                   timeout=TIMEOUT)

                def via_http(data: bytes):
                    def call():
                        response = http.post(url, files={"audio": ("clip.webm", data, "audio/webm")}, timeout=TIMEOUT)
                        response.raise_for_status()
                    return call

                def via_seed(data: bytes):
                    shared = Path(scratch) / "audio.webm"  # the seed's one shared temp file

                    def call():
                        shared.write_bytes(data)
                        subprocess.run([str(REPO / ".venv" / "asr" / "bin" / "python"),
                                        str(REPO / "bench" / "seed_transcribe.py"), str(shared),
                                        "--model", str(stack.config.models_dir / "faster-whisper-base")],
                                       check=True, capture_output=True, timeout=TIMEOUT)
                    return call

                for name, (data, seconds) in clip_set.items():
                    label = f"{seconds:4.1f} s"
                    via_grpc(data)(), via_http(data)()  # warm-up
                    # Interleaved, so that load from other processes on a shared
                    # machine falls on every path alike.
                    times: dict[str, list[float]] = {"grpc": [], "http": [], "seed": []}
                    for i in range(args.runs):
                        times["grpc"] += timed(via_grpc(data), 1)
                        times["http"] += timed(via_http(data), 1)
                        if i < args.seed_runs:
                            times["seed"] += timed(via_seed(data), 1)
                    rows.append((label, "gRPC Transcribe (warm)", times["grpc"]))
                    rows.append((label, "nginx + gateway (warm)", times["http"]))
                    rows.append((label, "seed: fresh process", times["seed"]))

                short_data, short_seconds = clip_set["short"]
                streams = [stream_once(stub, short_data, short_seconds) for _ in range(3)]
                throughput = [concurrent_clients(stub, short_data, clients, args.per_client)
                              for clients in (1, 2, 4, 8)]

                errors = words = 0
                misses: list[tuple[str, str]] = []
                for sentence in SENTENCES:
                    audio = clips.speech(sentence, "webm")
                    reply = stub.Transcribe(asr_pb2.TranscribeRequest(audio=audio), timeout=TIMEOUT)
                    wrong, said = word_errors(sentence, reply.text)
                    if wrong:
                        misses.append((sentence, reply.text))
                    errors += wrong
                    words += said
        finally:
            stack.stop()

    print(f"\nASR latency, Whisper base int8 on this CPU ({_cpu()}), {args.runs} warm runs per row "
          f"({args.seed_runs} for the seed)\n")
    print(f"{'clip':>7}  {'path':<26} {'n':>3} {'p50 s':>8} {'p95 s':>8}")
    for label, path, times in rows:
        print(f"{label:>7}  {path:<26} {len(times):>3} {p(times, 50):8.3f} {p(times, 95):8.3f}")
    print()
    for index in range(0, len(rows), 3):
        grpc_t, http_t, seed_t = (rows[index + k][2] for k in range(3))
        print(f"{rows[index][0].strip()} clip: nginx + gateway add {1000 * (p(http_t, 50) - p(grpc_t, 50)):+.1f} ms "
              f"p50; warm service is {p(seed_t, 50) / p(http_t, 50):.1f}x faster than the seed's way "
              f"(through the whole stack)")
    print(f"\nlive dictation, {short_seconds:.1f} s clip streamed in real time (3 runs): first interim after "
          f"{statistics.median(s[0] for s in streams):.2f} s, final {statistics.median(s[1] for s in streams):.2f} s "
          f"after the last chunk; final text: {streams[0][2]!r}")
    print(f"\nthroughput, {short_seconds:.1f} s clip over gRPC, {args.per_client} requests per client "
          "(ASR_WORKERS=1, ASR_MAX_QUEUE=8: the defaults)")
    print(f"{'clients':>7} {'clips/s':>8} {'audio s/s':>9} {'p50 s':>7} {'p95 s':>7}  refused")
    for clients, wall, latencies, refused in throughput:
        done = len(latencies)
        print(f"{clients:>7} {done / wall:8.2f} {done * short_seconds / wall:9.1f} {p(latencies, 50):7.2f} "
              f"{p(latencies, 95):7.2f}  {refused}")
    print(f"\nWER on {len(SENTENCES)} espeak-ng Spanish sentences ({words} words, normalised): "
          f"{100 * errors / words:.1f} % ({errors} errors)")
    for sentence, heard in misses:
        print(f"  said {sentence!r}, heard {heard!r}")
    return 0


def _cpu() -> str:
    import os

    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
