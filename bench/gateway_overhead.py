"""What the gateway adds on top of calling the gRPC services directly (a table; not a test).

Starts the native stack on free ports (scripts/stack.py, as `make run` does,
embedded SmolLM2 backend) and measures, warm:

1. Per request: `GET /v1/models` on the gateway (HTTP → API key → the chat
   and ASR services' ListModels at once → JSON) against the same two calls
   made straight over gRPC at once (and the chat service's alone), interleaved; also through nginx, with httpx
   as the client (to show what a heavier client costs), and `/healthz` (no
   auth, no gRPC) for the bare HTTP cost. Besides latency, the gateway's own
   CPU time per request, which other load on the machine barely moves.
2. Per streamed token: the same chat (seed fixed, greedy, N tokens) over gRPC
   `Chat` and over `POST /api/chat/stream`, interleaved: time to first token
   and the median gap between tokens on each path.
3. Concurrency: waves of 1…64 chat streams at once through the gateway and
   straight over gRPC: answers completed, tokens/s across all streams, errors
   by HTTP status / gRPC code (the chat service queues CHAT_MAX_QUEUE calls
   and refuses more with 429 / RESOURCE_EXHAUSTED: back-pressure, by design),
   and the gateway's resident memory after each wave.
4. Paired chats (issue 4's goal): the same request over gRPC `Chat`, the
   gateway's `/api/chat/stream` and nginx in front of it, in units of six chats
   on one prompt, in the order ABC CBA (the start rotating between units), so
   drift and warm-up cancel within a unit. Per unit: the difference of each HTTP
   path from gRPC in time to first token (ms) and in tokens/s (%); reported as
   the median over units with a bootstrap 95% interval, against the goal, plus
   the gateway's (and nginx's) CPU time per chat and per streamed token.
   `--backend embedded` uses the in-process model (its own run-to-run spread is
   the noise); `--backend ollama` runs the chat service's ollama backend against
   the Ollama stand-in (tests/chat/ollama_standin.py, in its own process) that
   answers at once and then sends `--max-tokens` pieces `--pace-ms` apart, so
   every difference is the gateway's and nginx's alone.
5. Paired transcriptions (issue 3's goal): the same clip (~2.5 s, then ~15 s
   of espeak-ng speech, webm/opus) as gRPC `Transcribe`, `POST /api/transcribe`
   to the gateway and through nginx, in ABC CBA units as in 4: the latency
   added (median of paired differences, bootstrap 95% interval) and the
   gateway's and nginx's CPU time per transcription. `--asr tiny` (default)
   runs the ASR service on a tiny random openai-whisper checkpoint (real
   decode, VAD and decoding loop, ~0.3 s a clip) so the model's own spread
   does not swamp a few ms; `--asr base` keeps the stack's Whisper base.

    .venv/test/bin/python bench/gateway_overhead.py [--requests 300] [--chats 12] [--max-tokens 16] [--parts 1,2,3]
    .venv/test/bin/python bench/gateway_overhead.py --parts 4 --backend ollama --max-tokens 16 --pace-ms 5 --pairs 200
    .venv/test/bin/python bench/gateway_overhead.py --parts 5 --pairs 60 --budget-s 120

Goal (issue 5): <= 2 ms p50 added per request; no error but 429 up to 64
concurrent streams; memory flat. Goal (issue 4): <= 5 ms added to time to
first token, <= 2 % fewer tokens/s. Goal (issue 3): gateway + nginx add
<= 5 ms p50 to a warm transcription.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import grpc
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc  # noqa: E402
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc  # noqa: E402

from scripts.stack import Stack, StackConfig  # noqa: E402

PROMPT = "Escribe una lista de diez frutas."


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}"


def stack_pid(stack: Stack, name: str) -> int:
    return next(s.process.pid for s in stack.services if s.name == name)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------ 1. per request

def keep_alive_get(port: int, path: str, headers: dict):
    """A GET on one kept-alive connection with the standard library's client.

    httpx spends ~0.9 ms of its own per request on this CPU: the client's cost,
    not the gateway's. The gRPC side is called with grpc's synchronous stub (C
    core), the leanest client there, so both sides use the leanest client.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def get() -> None:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
    return get


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: unlike latency, barely moved by other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request(stack: Stack, key: str, n: int) -> None:
    config = stack.config
    stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(f"127.0.0.1:{config.chat_port}"))
    asr = asr_pb2_grpc.TranscriptionStub(grpc.insecure_channel(f"127.0.0.1:{config.asr_port}"))
    auth = {"Authorization": f"Bearer {key}"}

    # What /v1/models asks, made straight over gRPC: both services, at once
    # (futures) or one after the other; "added" is over the faster of the two.
    def both_at_once() -> None:
        calls = (stub.ListModels.future(chat_pb2.ListModelsRequest(), timeout=10),
                 asr.ListModels.future(asr_pb2.ListModelsRequest(), timeout=10))
        for call in calls:
            call.result()

    def both_in_turn() -> None:
        stub.ListModels(chat_pb2.ListModelsRequest(), timeout=10)
        asr.ListModels(asr_pb2.ListModelsRequest(), timeout=10)
    gateway_pid = stack_pid(stack, "gateway")
    httpx_client = httpx.Client(base_url=f"http://127.0.0.1:{config.gateway_port}")
    paths = {
        "gRPC chat ListModels (direct)": lambda: stub.ListModels(chat_pb2.ListModelsRequest(), timeout=10),
        "gRPC chat + ASR ListModels at once": both_at_once,
        "gRPC chat + ASR ListModels in turn": both_in_turn,
        "gateway GET /healthz (no gRPC)": keep_alive_get(config.gateway_port, "/healthz", {}),
        "gateway GET /v1/models, API key": keep_alive_get(config.gateway_port, "/v1/models", auth),
        "  the same with httpx as client": lambda: httpx_client.get("/v1/models", headers=auth),
        "nginx+gateway GET /v1/models": keep_alive_get(config.http_port, "/v1/models", auth),
    }
    timings = {name: [] for name in paths}
    gateway_cpu = dict.fromkeys(paths, 0.0)
    for _ in range(20):  # warm every path
        for call in paths.values():
            call()
    for _ in range(n):
        for name, call in paths.items():
            cpu_before = cpu_seconds(gateway_pid)
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
            gateway_cpu[name] += cpu_seconds(gateway_pid) - cpu_before
    base = min(statistics.median(timings[f"gRPC chat + ASR ListModels {how}"]) for how in ("at once", "in turn"))
    print(f"\n1. Per request ({n} each, interleaved), ms      p50     p99  p50 added  gateway CPU/request")
    print("   (/v1/models asks the chat and the ASR service at once; \"added\" is over the faster way of making "
          "the same two calls straight over gRPC)")
    for name, values in timings.items():
        added = statistics.median(values) - base
        cpu = ms(gateway_cpu[name] / n) if not name.startswith("gRPC") else "      -"
        print(f"   {name:38s} {ms(statistics.median(values))} {ms(percentile(values, 99))}  {ms(added)}  {cpu}")


# ------------------------------------------------------------ 2. per token

def grpc_chat(stub, max_tokens: int) -> list[float]:
    request = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=PROMPT)],
                                   options=chat_pb2.GenerationOptions(temperature=0, max_tokens=max_tokens, seed=1))
    started, stamps = time.perf_counter(), []
    for reply in stub.Chat(request, timeout=300):
        if reply.delta:
            stamps.append(time.perf_counter() - started)
    return stamps


def gateway_chat(client: httpx.Client, max_tokens: int) -> list[float]:
    # /api/chat/stream takes no options: the stack runs with CHAT_MAX_TOKENS=max_tokens, temperature 0.
    started, stamps = time.perf_counter(), []
    with client.stream("POST", "/api/chat/stream", data={"message": PROMPT}, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                stamps.append(time.perf_counter() - started)
    return stamps


def per_token(stack: Stack, chats: int, max_tokens: int, headers: dict) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(f"127.0.0.1:{stack.config.chat_port}"))
    client = httpx.Client(base_url=f"http://127.0.0.1:{stack.config.gateway_port}", headers=headers)
    runs = {"gRPC Chat (direct)": [], "gateway /api/chat/stream": []}
    grpc_chat(stub, max_tokens), gateway_chat(client, max_tokens)  # warm
    for _ in range(chats):
        runs["gRPC Chat (direct)"].append(grpc_chat(stub, max_tokens))
        runs["gateway /api/chat/stream"].append(gateway_chat(client, max_tokens))
    print(f"\n2. Per streamed token ({chats} chats each, interleaved, greedy), ms")
    print("   path                                   TTFT p50  gap p50  gap p99  pieces")
    for name, stamp_lists in runs.items():
        ttft = [s[0] for s in stamp_lists if s]
        gaps = [b - a for s in stamp_lists for a, b in zip(s, s[1:])]
        print(f"   {name:38s} {ms(statistics.median(ttft))}  {ms(statistics.median(gaps))}  "
              f"{ms(percentile(gaps, 99))}  {statistics.median(len(s) for s in stamp_lists):.0f}")


# ------------------------------------------------------------ 3. concurrency

async def wave_gateway(url: str, streams: int, headers: dict) -> tuple[Counter, int, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
        async def one():
            pieces = 0
            try:
                async with client.stream("POST", "/api/chat/stream", data={"message": PROMPT}) as response:
                    if response.status_code != 200:
                        return str(response.status_code), 0
                    async for line in response.aiter_lines():
                        pieces += line.startswith("event: delta")
                        if line.startswith("event: error"):
                            return "error event", pieces
                return "ok", pieces
            except httpx.HTTPError as error:
                return type(error).__name__, pieces

        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        return Counter(r for r, _ in results), sum(p for _, p in results), time.perf_counter() - started


async def wave_grpc(address: str, streams: int, max_tokens: int) -> tuple[Counter, int, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=PROMPT)],
                                       options=chat_pb2.GenerationOptions(temperature=0, max_tokens=max_tokens))

        async def one():
            pieces = 0
            try:
                async for reply in stub.Chat(request, timeout=600):
                    pieces += bool(reply.delta)
                return "ok", pieces
            except grpc.aio.AioRpcError as error:
                return error.code().name, pieces

        started = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        return Counter(r for r, _ in results), sum(p for _, p in results), time.perf_counter() - started


def concurrency(stack: Stack, levels: list[int], max_tokens: int, headers: dict) -> None:
    gateway_pid = stack_pid(stack, "gateway")
    url = f"http://127.0.0.1:{stack.config.gateway_port}"
    print("\n3. Concurrent chat streams (one wave each)")
    print("   streams  path     outcomes                          pieces/s  wall s  gateway RSS MiB")
    print(f"   before   -        -                                        -       -  {rss_mib(gateway_pid):8.1f}")
    for streams in levels:
        for name, wave in (("gRPC", wave_grpc(f"127.0.0.1:{stack.config.chat_port}", streams, max_tokens)),
                           ("gateway", wave_gateway(url, streams, headers))):
            outcomes, pieces, wall = asyncio.run(wave)
            text = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            print(f"   {streams:7d}  {name:7s}  {text:32s} {pieces / wall:8.1f}  {wall:6.1f}  "
                  f"{rss_mib(gateway_pid) if name == 'gateway' else float('nan'):8.1f}")


# ------------------------------------------------------------ 4. paired chats (issue 4)

TTFT_GOAL_MS, TPS_GOAL_PCT = 5.0, 2.0
# Different prompts across units, the same prompt within one (greedy: the same answer on every path).
PROMPTS = [PROMPT, "Dime tres colores.", "¿Qué es un volcán?", "Nombra cinco animales del mar.",
           "Escribe un saludo corto.", "¿Cuánto es dos más dos?", "Describe el cielo de noche.",
           "Da un consejo para dormir bien."]


def grpc_stream(stub, prompt: str) -> list[float]:
    """Seconds from the call to each delta. The request is the one the gateway builds (no options:
    CHAT_MAX_TOKENS and CHAT_TEMPERATURE=0 of the stack apply to both)."""
    request = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=prompt)])
    started, stamps = time.perf_counter(), []
    for reply in stub.Chat(request, timeout=300):
        if reply.delta:
            stamps.append(time.perf_counter() - started)
    return stamps


RETRIED_502 = Counter()  # port -> 502s retried (see kept_alive_post)


def kept_alive_post(port: int, path: str, headers: dict):
    """POSTs on one kept-alive connection with the standard library's client (as keep_alive_get:
    httpx's own per-request cost would count against the gateway). The returned post(body,
    content_type) gives (the response, status 200, headers read; perf_counter when it was sent);
    the caller reads the body and then calls post.done()."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    last_used = [time.monotonic()]

    def post(body, content_type: str):
        if time.monotonic() - last_used[0] > 3:  # an idle connection may be closed by now: reconnect, untimed
            connection.close()
            connection.connect()
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers={**headers, "Content-Type": content_type})
        response = connection.getresponse()
        if response.status == 502 and RETRIED_502[port] < 20:
            # nginx reused an upstream connection just as the gateway closed it and does not retry a
            # POST: counted and reported, and the request made again, timed afresh.
            response.read()
            RETRIED_502[port] += 1
            return post(body, content_type)
        if response.status != 200:
            raise RuntimeError(f"{path} on {port}: {response.status} {response.read()[:200]!r}")
        return response, started

    post.done = lambda: last_used.__setitem__(0, time.monotonic())
    return post


def sse_stream(port: int, headers: dict):
    """POST /api/chat/stream: seconds from the request to each delta."""
    post = kept_alive_post(port, "/api/chat/stream", headers)

    def chat(prompt: str) -> list[float]:
        response, started = post(urllib.parse.urlencode({"message": prompt}), "application/x-www-form-urlencoded")
        stamps = []
        while line := response.readline():
            if line.startswith(b"event: delta"):
                stamps.append(time.perf_counter() - started)
            elif line.startswith(b"event: error"):
                raise RuntimeError(f"error event: {response.readline()!r}")
        post.done()
        return stamps
    return chat


def child_pids(parent: int) -> list[int]:
    """nginx's workers: the processes whose parent is the master."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return found


def bootstrap_median(values: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    """Median and its percentile-bootstrap 95% interval (seeded: the same data give the same interval)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return statistics.median(values), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def verdict(low: float, high: float, goal: float) -> str:
    """`goal` bounds the overhead from above: met when the whole interval is under it."""
    return "met" if high <= goal else "NOT met" if low > goal else "undecided"


def cpu_meters(stack: Stack, service: str) -> dict:
    """CPU-seconds readers of the front end and of the model service behind it."""
    workers = child_pids(stack_pid(stack, "nginx"))
    pids = {"gateway": stack_pid(stack, "gateway"), service: stack_pid(stack, service)}
    return {"gateway": lambda: cpu_seconds(pids["gateway"]), "nginx": lambda: sum(cpu_seconds(p) for p in workers),
            service: lambda: cpu_seconds(pids[service])}


def paired_units(paths: dict, meters: dict, pairs: int, budget_s: float, argument_of) -> tuple[list, dict, float]:
    """Units of six calls in the order ABC CBA (the start rotating between units, so drift and warm-up
    cancel within a unit), until `pairs` units or `budget_s` seconds. Unit k calls every path with
    argument_of(k). Returns the units (path -> [result of its two calls]), each path's CPU seconds
    per meter summed over its calls, and the wall time."""
    names = list(paths)
    units, cpu = [], {name: dict.fromkeys(meters, 0.0) for name in names}
    started = time.perf_counter()
    while len(units) < pairs and time.perf_counter() - started < budget_s:
        k = len(units)
        argument, order = argument_of(k), names[k % 3:] + names[:k % 3]
        unit = {name: [] for name in names}
        for name in order + order[::-1]:  # ABC CBA
            before = {meter: read() for meter, read in meters.items()}
            unit[name].append(paths[name](argument))
            for meter, read in meters.items():
                cpu[name][meter] += read() - before[meter]
        units.append(unit)
    return units, cpu, time.perf_counter() - started


def print_difference(name: str, metric: str, values: list[float], unit_text: str, goal: float | None,
                     width: int = 14) -> None:
    """One row: median of the paired differences [bootstrap 95% interval], the goal and the verdict."""
    values = [v for v in values if math.isfinite(v)]  # units whose calls all gave the metric
    if not values:
        print(f"   {name:{width}s} {metric:14s} n/a (answers too short)")
        return
    mid, low, high = bootstrap_median(values)
    goal_text = f"<= {goal:g} {unit_text.strip()}" if goal is not None else "-"
    print(f"   {name:{width}s} {metric:14s} {mid:+8.3f} {unit_text} [{low:+8.3f}, {high:+8.3f}]   {goal_text:9s} "
          f"{verdict(low, high, goal) if goal is not None else '-':9s}  n={len(values)}")


def paired_chats(stack: Stack, headers: dict, pairs: int, budget_s: float, label: str, model_inside: bool) -> None:
    config = stack.config
    stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(f"127.0.0.1:{config.chat_port}"))
    paths = {"gRPC": lambda p: grpc_stream(stub, p),
             "gateway": sse_stream(config.gateway_port, headers),
             "nginx+gateway": sse_stream(config.http_port, headers)}
    names = list(paths)
    for prompt in PROMPTS[:2]:  # warm every path (ABC CBA cancels what a prompt's first run costs)
        for call in paths.values():
            call(prompt)
    units, cpu_by_meter, wall = paired_units(paths, cpu_meters(stack, "chat"), pairs, budget_s,
                                             lambda k: PROMPTS[k % len(PROMPTS)])
    # path -> [gateway s, nginx s, chat service s] over its chats
    cpu = {name: [cpu_by_meter[name][m] for m in ("gateway", "nginx", "chat")] for name in names}
    pieces = {name: sum(len(s) for u in units for s in u[name]) for name in names}
    n = len(units)

    def ttft(stamps):  # ms
        return stamps[0] * 1000

    def tps(stamps):
        # Pieces per second from the second piece on: an HTTP path's first piece carries the response's
        # start (headers, meta event), which would shorten its span and flatter it; that belongs to TTFT.
        return (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else float("nan")

    def gap(stamps):  # ms, median gap between pieces
        return statistics.median(b - a for a, b in zip(stamps, stamps[1:])) * 1000

    def per_unit(unit, name, metric):  # nan when a chat had too few pieces for the metric
        return statistics.fmean(metric(s) for s in unit[name])

    def median_of(values):
        values = [v for v in values if math.isfinite(v)]
        return statistics.median(values) if values else float("nan")

    print(f"\n4. Paired chats, {label}: {n} units of 6 chats (ABC CBA, one prompt per unit, {len(PROMPTS)} prompts), "
          f"{wall:.0f} s; pieces per chat p50 {statistics.median(len(s) for u in units for s in u['gRPC']):.0f}")
    print("   medians per path (mean of a unit's two chats, median over units)")
    print("   path            TTFT ms  tokens/s  gap ms   gateway CPU ms/chat  net ms/chat  net ms/token   "
          "nginx CPU ms/chat  ms/token   chat service CPU ms/token")
    chats = 2 * n
    for name in names:
        # The gateway uses some CPU while idle (its CPU during the gRPC chats); "net" subtracts that baseline.
        net = cpu[name][0] - cpu["gRPC"][0]
        print(f"   {name:14s} {median_of(per_unit(u, name, ttft) for u in units):8.2f}  "
              f"{median_of(per_unit(u, name, tps) for u in units):8.2f}  "
              f"{median_of(per_unit(u, name, gap) for u in units):6.2f}   "
              f"{cpu[name][0] / chats * 1000:19.3f}  {net / chats * 1000:11.3f}  "
              f"{net / max(1, pieces[name]) * 1000:12.4f}   "
              f"{cpu[name][1] / chats * 1000:17.3f}  {cpu[name][1] / max(1, pieces[name]) * 1000:8.4f}   "
              f"{cpu[name][2] / max(1, pieces[name]) * 1000:25.3f}")
    print(f"   (CPU: user+system from /proc/PID/stat in {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks, summed over "
          f"each path's {chats} chats; tokens/s from the second piece on; gap: median per chat)")
    print("\n   paired difference from gRPC, median over units [bootstrap 95% interval]      goal      verdict")
    for name in names[1:]:
        d_ttft = [per_unit(u, name, ttft) - per_unit(u, "gRPC", ttft) for u in units]
        # tokens/s lost, in % of gRPC's (positive = the HTTP path is slower)
        d_tps = [100 * (1 - per_unit(u, name, tps) / per_unit(u, "gRPC", tps)) for u in units]
        d_gap = [per_unit(u, name, gap) - per_unit(u, "gRPC", gap) for u in units]
        for metric, values, unit_text, goal in (("TTFT added", d_ttft, "ms", TTFT_GOAL_MS),
                                                 ("tokens/s lost", d_tps, "% ", TPS_GOAL_PCT),
                                                 ("gap added", d_gap, "ms", None)):
            print_difference(name, metric, values, unit_text, goal)
    if RETRIED_502[config.http_port]:
        print(f"   nginx answered 502 {RETRIED_502[config.http_port]} time(s), each retried: it reused a connection "
              "the gateway had just closed (uvicorn's keep-alive 5 s < nginx's upstream 60 s)")
    if not model_inside:  # the stand-in, not the chat service, makes the tokens
        return
    # Load-proof bound: on a machine whose cores the model saturates, the gateway's (and nginx's) CPU per
    # token is taken from the model's; the share is the most tokens/s they can cost it.
    model_per_token = cpu["gRPC"][2] / max(1, pieces["gRPC"])
    for name in names[1:]:
        front = (cpu[name][0] - cpu["gRPC"][0] + cpu[name][1]) / max(1, pieces[name])
        print(f"   {name:14s} CPU share      {100 * front / model_per_token:+8.3f} %  (front-end CPU per piece "
              f"{front * 1000:.3f} ms / chat service's {model_per_token * 1000:.3f} ms: the most tokens/s it can "
              f"take from a CPU-bound model)   <= {TPS_GOAL_PCT:g} %      "
              f"{'met' if 100 * front / model_per_token <= TPS_GOAL_PCT else 'NOT met'}")


# ------------------------------------------------------------ 5. paired transcriptions (issue 3)

ASR_GOAL_MS = 5.0


def multipart(data: bytes) -> tuple[bytes, str]:
    """The form a browser sends to /api/transcribe (file field 'audio', audio/webm), built once per clip."""
    boundary = "benchboundary7d41"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"clip.webm\"\r\n"
            f"Content-Type: audio/webm\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def http_transcribe(port: int, headers: dict):
    """POST /api/transcribe: seconds to the whole JSON answer, and its text."""
    post = kept_alive_post(port, "/api/transcribe", headers)

    def call(form: tuple[bytes, str]) -> tuple[float, str]:
        response, started = post(*form)
        answer = json.loads(response.read())
        elapsed = time.perf_counter() - started
        post.done()
        return elapsed, answer["transcription"]
    return call


def paired_transcriptions(stack: Stack, headers: dict, pairs: int, budget_s: float, label: str) -> None:
    from bench.asr_latency import long_clip  # the clips bench/asr_latency.py measures
    from tests.support.spanish_speech import SHORT
    from tests.support import audio_clips as clips

    config = stack.config
    stub = asr_pb2_grpc.TranscriptionStub(grpc.insecure_channel(f"127.0.0.1:{config.asr_port}"))
    # The request the gateway builds from the form (task only: the service's default language and beam).
    options = asr_pb2.TranscriptionOptions(task=asr_pb2.TASK_TRANSCRIBE)

    def grpc_transcribe(audio: tuple[bytes, tuple]) -> tuple[float, str]:
        started = time.perf_counter()
        reply = stub.Transcribe(asr_pb2.TranscribeRequest(audio=audio[0], mime_type="audio/webm", options=options),
                                timeout=300)
        return time.perf_counter() - started, reply.text

    over_http = {"gateway": http_transcribe(config.gateway_port, headers),
                 "nginx+gateway": http_transcribe(config.http_port, headers)}
    paths = {"gRPC": grpc_transcribe, **{name: (lambda a, c=call: c(a[1])) for name, call in over_http.items()}}
    names = list(paths)
    meters = cpu_meters(stack, "asr")

    # The service must decode the webm, find speech (VAD) and run the model: silence gives no text, speech some.
    hiss = clips.encode(*clips.silence(2.5), "webm")
    silent = stub.Transcribe(asr_pb2.TranscribeRequest(audio=hiss, mime_type="audio/webm", options=options),
                             timeout=300)
    print(f"\n5. Paired transcriptions, {label}: units of 6 (ABC CBA, the same clip), webm/opus of espeak-ng speech; "
          f"2.5 s of hiss gives {silent.text!r} (VAD ran), {len(silent.segments)} segments")
    print("   clip    units  wall s  path            latency ms  gateway CPU ms/transcr.  net ms   "
          "nginx CPU ms  net ms   ASR service CPU ms")
    differences = []
    short = clips.wav_to_samples(clips.speak_wav(SHORT))
    for samples, rate in (short, long_clip()):
        webm = clips.encode(samples, rate, "webm")
        audio = (webm, multipart(webm))
        texts = {name: call(audio)[1] for name, call in paths.items() for _ in range(2)}  # warm every path
        if len(set(texts.values())) != 1 or not texts["gRPC"]:
            raise RuntimeError(f"the paths answered differently or with no text: {texts}")
        units, cpu, wall = paired_units(paths, meters, pairs, budget_s, lambda k: audio)
        n, calls, seconds = len(units), 2 * len(units), len(samples) / rate
        latency = {name: [statistics.fmean(t for t, _ in u[name]) * 1000 for u in units] for name in names}
        for name in names:
            # "net": less the same process's CPU during the gRPC calls (idle work, timers), per transcription
            net = {m: (cpu[name][m] - cpu["gRPC"][m]) / calls * 1000 for m in ("gateway", "nginx")}
            print(f"   {seconds:4.1f} s  {n:5d}  {wall:6.0f}  {name:14s} {statistics.median(latency[name]):10.1f}  "
                  f"{cpu[name]['gateway'] / calls * 1000:23.3f}  {net['gateway']:6.3f}   "
                  f"{cpu[name]['nginx'] / calls * 1000:12.3f}  {net['nginx']:6.3f}   "
                  f"{cpu[name]['asr'] / calls * 1000:18.1f}")
        print(f"          text (the same on every path): {texts['gRPC'][:60]!r}")
        for name in names[1:]:
            differences.append((f"{seconds:4.1f} s {name}", [a - b for a, b in zip(latency[name], latency["gRPC"])]))
    print(f"   (latency: mean of a unit's two calls, median over units; CPU: user+system from /proc/PID/stat in "
          f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks, summed over each path's calls)")
    print("\n   clip   path          paired difference from gRPC, median over units [bootstrap 95% interval]  "
          "goal      verdict")
    for name, values in differences:
        print_difference(name, "latency added", values, "ms", ASR_GOAL_MS, width=20)
    if RETRIED_502[config.http_port]:
        print(f"   nginx answered 502 {RETRIED_502[config.http_port]} time(s), each retried")


def start_standin(pieces: int, pace_ms: float) -> tuple[subprocess.Popen, str]:
    """The Ollama stand-in in its own process (so this client's GIL does not pace it); prints its URL."""
    code = ("import sys, time\n"
            "from tests.chat.ollama_standin import OllamaStandin, StandinState\n"
            f"state = StandinState(pieces=['tok '] * {pieces}, piece_interval_s={pace_ms / 1000!r})\n"
            "with OllamaStandin(state) as server:\n"
            "    print(server.url, flush=True)\n"
            "    sys.stdin.read()  # until the benchmark closes stdin\n")
    # stderr dropped: the chat service closing its kept-alive connections at the end prints resets there.
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        raise RuntimeError(f"the Ollama stand-in did not start (exit code {process.wait(10)})")
    return process, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chats", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--levels", default="1,2,4,8,16,32,64")
    parser.add_argument("--parts", default="1,2,3", help="which of the five measurements to run")
    parser.add_argument("--backend", choices=["embedded", "ollama"], default="embedded",
                        help="the chat service's backend: the embedded model, or ollama against the stand-in")
    parser.add_argument("--pace-ms", type=float, default=5.0, help="ollama stand-in: ms between pieces")
    parser.add_argument("--pairs", type=int, default=60, help="parts 4 and 5: units of six calls (per clip in 5)")
    parser.add_argument("--budget-s", type=float, default=300,
                        help="parts 4 and 5: stop adding units after this (per clip in 5)")
    parser.add_argument("--asr", choices=["tiny", "base"], default="tiny",
                        help="part 5: the tiny random openai-whisper checkpoint, or the stack's Whisper base")
    args = parser.parse_args(argv)
    standin = None
    extra_env = {"CHAT_MAX_TOKENS": str(args.max_tokens), "CHAT_TEMPERATURE": "0",
                 "RATE_LIMIT_PER_MINUTE": "100000", "MAX_STREAMS_PER_USER": "1000"}
    label = "embedded model"
    if args.backend == "ollama":
        standin, standin_url = start_standin(args.max_tokens, args.pace_ms)
        extra_env.update(CHAT_BACKEND="ollama", OLLAMA_URL=standin_url, CHAT_MODEL="llama3.2-vision")
        label = f"ollama backend, stand-in: {args.max_tokens} pieces {args.pace_ms:g} ms apart, first at once"
    asr_label = "Whisper base (faster-whisper, the stack's default)"
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as run_dir:
        run_dir = Path(run_dir)
        if "5" in args.parts.split(",") and args.asr == "tiny":
            # A fast, deterministic model behind the real service (decode, VAD, Whisper's decoding loop), so
            # the paths differ only by the front end; one thread (two oversubscribe 2 cores with the front
            # end), greedy. The other parts' ASR ListModels then describes this model.
            from tests.support.tiny_whisper import build_in_asr_venv
            extra_env.update(ASR_ENGINE="openai-whisper", ASR_MODEL=str(build_in_asr_venv(run_dir / "tiny.pt")),
                             ASR_CPU_THREADS="1", ASR_BEAM_SIZE="1")
            asr_label = "tiny random openai-whisper checkpoint (tests/support/tiny_whisper.py), 1 thread, greedy"
        # auth "on" so the key path is measured; /api/chat/stream below uses a key as well.
        config = StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="on", extra_env=extra_env)
        stack = Stack(config)
        started = time.perf_counter()
        try:
            stack.start(timeout=900)
            print(f"stack ready in {time.perf_counter() - started:.1f} s; machine: {subprocess.getoutput('nproc')} "
                  f"cores, {subprocess.getoutput('uname -m')}, load average {os.getloadavg()[0]:.1f}")
            made = subprocess.run([str(REPO / ".venv/gateway/bin/python"), "-m", "gateway.admin", "create-key",
                                   "admin", "--name", "bench"], env={**config.service_env(), "PATH": "/usr/bin:/bin"},
                                  capture_output=True, text=True, check=True)
            key = made.stdout.strip()
            parts = args.parts.split(",")
            headers = {"Authorization": f"Bearer {key}"}
            if "1" in parts:
                per_request(stack, key, args.requests)
            if "2" in parts:
                per_token(stack, args.chats, args.max_tokens, headers)
            if "3" in parts:
                concurrency(stack, [int(v) for v in args.levels.split(",")], args.max_tokens, headers)
            if "4" in parts:
                paired_chats(stack, headers, args.pairs, args.budget_s, label, args.backend == "embedded")
            if "5" in parts:
                paired_transcriptions(stack, headers, args.pairs, args.budget_s, asr_label)
            print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other work on the machine inflates latency, "
                  "not the gateway's CPU per request)")
        finally:
            stack.stop()
            if standin is not None:
                standin.stdin.close()
                standin.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
