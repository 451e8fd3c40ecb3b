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

    .venv/test/bin/python bench/gateway_overhead.py [--requests 300] [--chats 12] [--max-tokens 16] [--parts 1,2,3]

Goal (issue 5): <= 2 ms p50 added per request; no error but 429 up to 64
concurrent streams; memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chats", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--levels", default="1,2,4,8,16,32,64")
    parser.add_argument("--parts", default="1,2,3", help="which of the three measurements to run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as run_dir:
        run_dir = Path(run_dir)
        # auth "on" so the key path is measured; /api/chat/stream below uses a key as well.
        config = StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="on", extra_env={
            "CHAT_MAX_TOKENS": str(args.max_tokens), "CHAT_TEMPERATURE": "0",
            "RATE_LIMIT_PER_MINUTE": "100000", "MAX_STREAMS_PER_USER": "1000"})
        stack = Stack(config)
        started = time.perf_counter()
        stack.start(timeout=900)
        try:
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
            print(f"\nload average at the end {os.getloadavg()[0]:.1f} (other work on the machine inflates latency, "
                  "not the gateway's CPU per request)")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
