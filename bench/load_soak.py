"""Load ramp and soak of the whole stack through nginx (tables; not a test).

Starts the native stack on free ports (scripts/stack.py, as `make run` does,
embedded SmolLM2 backend, auth on with an API key), then, all on loopback and
every phase bounded in requests and time:

1. Ramp: closed-loop clients at 1, 2, 4, 8, 16, 32, 48 at once, each sending a
   mix of 3 chat streams (`POST /api/chat/stream`, CHAT_MAX_TOKENS tokens) to 1
   transcription (`POST /api/transcribe`, a ~3 s Spanish espeak-ng clip,
   webm/opus). The gateway's per-user limits are raised for this phase (one
   user would otherwise get 429 from them first), so that the ramp finds the
   services' own back-pressure: CHAT_WORKERS + CHAT_MAX_QUEUE chats and
   ASR_WORKERS + ASR_MAX_QUEUE transcriptions admitted, the rest refused with
   429. A client that gets a 429 waits Retry-After (1 s when absent) and goes
   on. Per level: p50/p95/p99 latency per kind (and time to first token for
   chats), outcomes by type, and a FAILURE line for any 5xx, SSE `error`
   event, cut stream, client timeout (310 s: above the gateway's 300 s
   deadlines) or connection error.
2. Per-user limits: a second gateway + nginx in front of the same model
   services with the default RATE_LIMIT_PER_MINUTE=60 and MAX_STREAMS_PER_USER=4:
   6 streams at once from one key, then a burst of cheap charged calls
   (an empty chat message: counted, then refused with 400 before any model
   work) until the minute's budget is spent; both show 429 with Retry-After.
3. Soak: a steady mix below the 429 point (half the largest ramp level
   without a 429, unless --soak-concurrency is given) for --soak-s seconds,
   sampling every 10 s the resident memory of the gateway, nginx (master and
   workers), chat and ASR processes (each with its children): memory over
   time, growth, outcomes and latency percentiles over the soak.

    .venv/test/bin/python bench/load_soak.py [--levels 1,2,4,8,16,32,48] [--level-s 60] [--soak-s 600]
    .venv/test/bin/python bench/load_soak.py --quick     # a few seconds per phase

Goal (issue 8): back-pressure shows as 429, never as a 5xx or a timeout;
memory flat over the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gateway_overhead import PROMPT, percentile  # noqa: E402
from scripts.stack import Stack, StackConfig  # noqa: E402
from tests.support import audio_clips as clips  # noqa: E402

CLIP_TEXT = "Hola, quiero saber el tiempo de mañana en Madrid."
MIX = ("chat", "chat", "chat", "transcribe")  # 3 chat streams : 1 transcription
HZ = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------ processes

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (nginx workers, any helper processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mib(root: int) -> float:
    return sum(rss_mib(pid) for pid in process_tree(root))


def tree_cpu_s(root: int) -> float:
    """CPU seconds of the tree, with its reaped children (utime stime cutime cstime)."""
    total = 0
    for pid in process_tree(root):
        if fields := _stat(pid):
            total += sum(int(v) for v in fields[11:15])
    return total / HZ


def machine_busy_s() -> float:
    """CPU seconds spent by everything on the machine (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / HZ


SERVICES = ("gateway", "nginx", "chat", "asr")


def service_pids(stack: Stack) -> dict[str, int]:
    return {s.name: s.process.pid for s in stack.services if s.process is not None}


class CpuShare:
    """How much CPU other processes (not the stack, not this client) took during a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[float, float, float]:
        own = sum(os.times()[:4])
        ours = sum(tree_cpu_s(pid) for pid in self.pids.values()) + own
        return time.monotonic(), machine_busy_s(), ours

    def line(self) -> str:
        now, busy, ours = self._read()
        wall, busy, ours = now - self.start[0], busy - self.start[1], ours - self.start[2]
        other = max(0.0, busy - ours)
        return (f"CPU over {wall:.0f} s: stack + this client {ours / wall:.2f} cores, other processes "
                f"{other / wall:.2f} cores (of {os.cpu_count()})")


# ------------------------------------------------------------ requests

@dataclass
class Result:
    kind: str
    outcome: str  # "ok", "429 busy", "HTTP 503 unavailable", "SSE error timeout", "client timeout", ...
    latency: float
    ttft: float | None = None
    retry_after: str | None = None
    finished: float = field(default_factory=time.monotonic)

    @property
    def failure(self) -> bool:
        """What the back-pressure goal forbids: 5xx, errors mid-stream, cut streams, timeouts, dropped connections."""
        return self.outcome not in ("ok",) and not self.outcome.startswith(("429", "HTTP 4"))

    @property
    def unexpected_4xx(self) -> bool:
        return self.outcome.startswith("HTTP 4")


def _error_type(body: bytes) -> str:
    try:
        return json.loads(body).get("error_type", "?")
    except (ValueError, AttributeError):
        return "non-JSON"


def _refusal(kind: str, started: float, response: httpx.Response, body: bytes) -> Result:
    status = response.status_code
    label = f"429 {_error_type(body)}" if status == 429 else f"HTTP {status} {_error_type(body)}"
    return Result(kind, label, time.perf_counter() - started, retry_after=response.headers.get("retry-after"))


async def chat_stream(client: httpx.AsyncClient, message: str = PROMPT) -> Result:
    started, ttft, event = time.perf_counter(), None, "message"
    try:
        async with client.stream("POST", "/api/chat/stream", data={"message": message}) as response:
            if response.status_code != 200:
                return _refusal("chat", started, response, await response.aread())
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "delta" and ttft is None:
                        ttft = time.perf_counter() - started
                elif line.startswith("data:") and event == "error":
                    return Result("chat", f"SSE error {_error_type(line[5:].encode())}", time.perf_counter() - started,
                                  ttft)
                elif line.startswith("data:") and event == "done":
                    return Result("chat", "ok", time.perf_counter() - started, ttft)
        return Result("chat", "stream ended without done", time.perf_counter() - started, ttft)
    except httpx.TimeoutException:
        return Result("chat", "client timeout", time.perf_counter() - started, ttft)
    except httpx.TransportError as error:
        return Result("chat", f"connection error {type(error).__name__}", time.perf_counter() - started, ttft)


async def transcribe(client: httpx.AsyncClient, audio: bytes) -> Result:
    started = time.perf_counter()
    try:
        response = await client.post("/api/transcribe", files={"audio": ("clip.webm", audio, "audio/webm")})
        if response.status_code != 200:
            return _refusal("transcribe", started, response, response.content)
        if not response.json().get("transcription", "").strip():
            return Result("transcribe", "empty transcription", time.perf_counter() - started)
        return Result("transcribe", "ok", time.perf_counter() - started)
    except httpx.TimeoutException:
        return Result("transcribe", "client timeout", time.perf_counter() - started)
    except httpx.TransportError as error:
        return Result("transcribe", f"connection error {type(error).__name__}", time.perf_counter() - started)


async def closed_loop(url: str, headers: dict, audio: bytes, clients: int, max_requests: int, seconds: float,
                      timeout: float) -> tuple[list[Result], float]:
    """`clients` loops, each sending the mix back to back (client i starts at MIX[i % 4]), until
    `max_requests` have been started or `seconds` have passed; in-flight requests finish (or time out)."""
    results: list[Result] = []
    started_count = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(timeout, connect=10)) as client:
        async def loop(index: int) -> None:
            nonlocal started_count
            step = index
            while started_count < max_requests and time.monotonic() < deadline:
                started_count += 1
                kind = MIX[step % len(MIX)]
                step += 1
                result = await (chat_stream(client) if kind == "chat" else transcribe(client, audio))
                results.append(result)
                if result.outcome.startswith("429"):  # a polite client: wait as told, then go on
                    try:
                        wait = float(result.retry_after or 1)
                    except ValueError:
                        wait = 1.0
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                elif result.outcome != "ok":
                    await asyncio.sleep(0.2)

        began = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        return results, time.perf_counter() - began


# ------------------------------------------------------------ tables

def pct3(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7}"
    return " ".join(f"{percentile(values, q):7.2f}" for q in (50, 95, 99))


def kind_rows(results: list[Result], wall: float, indent: str = "   ") -> list[str]:
    rows = [f"{indent}{'kind':<10} {'n':>4} {'ok':>4} {'429':>4} {'fail':>4} {'ok/s':>5}   "
            f"{'latency s p50':>13} {'p95':>7} {'p99':>7}   {'TTFT s p50':>10} {'p95':>7} {'p99':>7}   "
            f"{'429 ms p50':>10}"]
    for kind in ("chat", "transcribe"):
        mine = [r for r in results if r.kind == kind]
        ok = [r for r in mine if r.outcome == "ok"]
        refused = [r for r in mine if r.outcome.startswith("429")]
        fails = [r for r in mine if r.failure or r.unexpected_4xx]
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        refused_ms = f"{1000 * percentile([r.latency for r in refused], 50):10.1f}" if refused else f"{'-':>10}"
        rows.append(f"{indent}{kind:<10} {len(mine):4d} {len(ok):4d} {len(refused):4d} {len(fails):4d} "
                    f"{len(ok) / wall if wall else 0:5.2f}   {pct3([r.latency for r in ok]):>29}   "
                    f"{pct3(ttfts) if kind == 'chat' else ' ' * 23:>26}   {refused_ms}")
    return rows


def outcome_line(results: list[Result]) -> str:
    counts = Counter(f"{r.kind} {r.outcome}" for r in results)
    text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    refused = [r for r in results if r.outcome.startswith("429")]
    if refused:
        with_header = sum(r.retry_after is not None for r in refused)
        text += f"; Retry-After on {with_header} of {len(refused)} 429s"
    return text


def verdict(results: list[Result]) -> str:
    failures = Counter(f"{r.kind} {r.outcome}" for r in results if r.failure)
    odd = Counter(f"{r.kind} {r.outcome}" for r in results if r.unexpected_4xx)
    text = ("FAILURE of the back-pressure goal: " + ", ".join(f"{k} x{v}" for k, v in failures.items())
            if failures else "back-pressure OK: no 5xx, no SSE error, no cut stream, no timeout, no dropped connection")
    if odd:
        text += "; UNEXPECTED 4xx: " + ", ".join(f"{k} x{v}" for k, v in odd.items())
    return text


# ------------------------------------------------------------ phases

def ramp(stack: Stack, headers: dict, audio: bytes, args) -> tuple[list[tuple[int, list[Result], float]], int]:
    pids = service_pids(stack)
    print(f"\n1. Ramp: closed-loop clients sending the mix {':'.join(MIX)} through nginx; each level stops "
          f"starting requests after {args.level_s:.0f} s or max(20, {args.per_client} x clients) requests; "
          f"client timeout {args.timeout:.0f} s", flush=True)
    summary = []
    for level in args.levels:
        before = {name: tree_rss_mib(pid) for name, pid in pids.items()}
        share = CpuShare(pids)
        cap = max(20, args.per_client * level)
        results, wall = asyncio.run(closed_loop(stack.config.url, headers, audio, level, cap, args.level_s,
                                                args.timeout))
        after = {name: tree_rss_mib(pid) for name, pid in pids.items()}
        stack.check_alive()
        print(f"\n   level {level:2d}: {len(results)} requests in {wall:.1f} s; load average {_load()}; "
              + ", ".join(f"{n} {before[n]:.0f}->{after[n]:.0f}" for n in SERVICES) + " MiB RSS")
        print("\n".join(kind_rows(results, wall, "     ")))
        print(f"     outcomes: {outcome_line(results)}")
        print(f"     {share.line()}")
        print(f"     {verdict(results)}", flush=True)
        summary.append((level, results, wall))
    print("\n   Ramp summary (latency of answered requests, s; 429 = refused at once)")
    print(f"   {'clients':>7} {'reqs':>5} {'chat ok':>7} {'429':>4} {'asr ok':>6} {'429':>4} {'fail':>4}   "
          f"{'chat p50':>8} {'p95':>6} {'p99':>6}   {'TTFT p50':>8} {'p95':>6}   {'asr p50':>7} {'p95':>6} {'p99':>6}")
    free_of_429 = 0
    for level, results, wall in summary:
        def of(kind, pred):
            return [r for r in results if r.kind == kind and pred(r)]
        chat_ok, asr_ok = of("chat", lambda r: r.outcome == "ok"), of("transcribe", lambda r: r.outcome == "ok")
        chat_429 = of("chat", lambda r: r.outcome.startswith("429"))
        asr_429 = of("transcribe", lambda r: r.outcome.startswith("429"))
        fails = [r for r in results if r.failure or r.unexpected_4xx]
        cl, tt, al = [r.latency for r in chat_ok], [r.ttft for r in chat_ok if r.ttft], [r.latency for r in asr_ok]

        def three(v, n=3):
            return " ".join(f"{percentile(v, q):6.2f}" if v else f"{'-':>6}" for q in (50, 95, 99)[:n])
        print(f"   {level:7d} {len(results):5d} {len(chat_ok):7d} {len(chat_429):4d} {len(asr_ok):6d} "
              f"{len(asr_429):4d} {len(fails):4d}   {three(cl):>22}   {three(tt, 2):>15}   {three(al):>21}")
    for level, results, _ in summary:
        if any(r.outcome.startswith("429") for r in results):
            break
        free_of_429 = level
    first_429 = {kind: next((level for level, results, _ in summary
                             if any(r.kind == kind and r.outcome.startswith("429") for r in results)), None)
                 for kind in ("chat", "transcribe")}
    print(f"   first 429 at {first_429['chat']} clients for chat, {first_429['transcribe']} for transcription "
          f"(None: not reached); largest level without any 429: {free_of_429 or 'none'}")
    everything = [r for _, results, _ in summary for r in results]
    print(f"   whole ramp: {verdict(everything)}", flush=True)
    return summary, free_of_429


def user_limits(stack: Stack, run_dir: Path, args) -> None:
    """A second front (gateway + nginx) with the default per-user limits, on the same model services."""
    config = StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="on",
                                       asr_port=stack.config.asr_port, chat_port=stack.config.chat_port,
                                       extra_env={**stack.config.extra_env, "RATE_LIMIT_PER_MINUTE": "60",
                                                  "MAX_STREAMS_PER_USER": "4"})
    front = Stack(config, model_services=False)
    front.start(timeout=120)
    try:
        key = create_key(config)
        headers = {"Authorization": f"Bearer {key}"}

        async def run() -> tuple[list[Result], list[Result]]:
            async with httpx.AsyncClient(base_url=config.url, headers=headers,
                                         timeout=httpx.Timeout(args.timeout, connect=10)) as client:
                streams = await asyncio.gather(*(chat_stream(client) for _ in range(6)))
                burst = []
                for _ in range(80):  # bounded; stops after a few 429s
                    burst.append(await chat_stream(client, message=" "))
                    if sum(r.outcome.startswith("429") for r in burst) >= 5:
                        break
                return list(streams), burst

        streams, burst = asyncio.run(run())
    finally:
        front.stop()
    print("\n2. Per-user limits (a second gateway + nginx on the same model services, default "
          "RATE_LIMIT_PER_MINUTE=60, MAX_STREAMS_PER_USER=4), one API key")
    print(f"   6 chat streams at once: {outcome_line(streams)}; Retry-After values "
          f"{sorted({r.retry_after for r in streams if r.retry_after})}")
    refused = [r for r in burst if r.outcome.startswith("429")]
    print(f"   then {len(burst)} charged calls back to back (empty message: counted, then 400 before any model "
          f"work): {outcome_line(burst)}; first 429 at call {burst.index(refused[0]) + 1 if refused else None}; "
          f"Retry-After values {sorted({r.retry_after for r in refused})}")
    bad = [r for r in streams + burst if r.failure]
    print(f"   {'no 5xx, no timeout' if not bad else verdict(streams + burst)}", flush=True)


def soak(stack: Stack, headers: dict, audio: bytes, clients: int, args) -> None:
    pids = service_pids(stack)
    samples: list[tuple[float, dict[str, float], float]] = []
    share = CpuShare(pids)

    async def run() -> tuple[list[Result], float]:
        stop = asyncio.Event()

        async def sampler() -> None:
            began = time.monotonic()
            while True:
                samples.append((time.monotonic() - began, {n: tree_rss_mib(p) for n, p in pids.items()},
                                os.getloadavg()[0]))
                try:
                    await asyncio.wait_for(stop.wait(), args.sample_s)
                    samples.append((time.monotonic() - began, {n: tree_rss_mib(p) for n, p in pids.items()},
                                    os.getloadavg()[0]))
                    return
                except asyncio.TimeoutError:
                    pass

        task = asyncio.create_task(sampler())
        try:
            return await closed_loop(stack.config.url, headers, audio, clients, 10 ** 9, args.soak_s, args.timeout)
        finally:
            stop.set()
            await task

    began = time.monotonic()
    results, wall = asyncio.run(run())
    stack.check_alive()
    print(f"\n3. Soak: {clients} closed-loop clients, mix {':'.join(MIX)}, {args.soak_s:.0f} s "
          f"({wall:.0f} s with the last requests), RSS sampled every {args.sample_s:.0f} s "
          f"({len(samples)} samples)")
    print(f"   {'t s':>6} {'done':>5} {'ok':>4} {'429':>4} {'fail':>4} {'chat p50 s':>10} {'asr p50 s':>9}  "
          + " ".join(f"{n + ' MiB':>11}" for n in SERVICES) + f" {'load1':>6}")
    shown, last_t = [], -1.0
    for t, rss, load in samples:
        if not shown or t - shown[-1][0] >= args.row_s - args.sample_s / 2 or (t, rss, load) == samples[-1]:
            shown.append((t, rss, load))
    for t, rss, load in shown:
        window = [r for r in results if last_t < r.finished - began <= t] if last_t >= 0 else []
        ok = [r for r in window if r.outcome == "ok"]
        chat = [r.latency for r in ok if r.kind == "chat"]
        asr = [r.latency for r in ok if r.kind == "transcribe"]
        print(f"   {t:6.0f} {len(window):5d} {len(ok):4d} {sum(r.outcome.startswith('429') for r in window):4d} "
              f"{sum(r.failure for r in window):4d} {percentile(chat, 50) if chat else float('nan'):10.2f} "
              f"{percentile(asr, 50) if asr else float('nan'):9.2f}  "
              + " ".join(f"{rss[n]:11.1f}" for n in SERVICES) + f" {load:6.2f}")
        last_t = t
    first, last = samples[0][1], samples[-1][1]
    print("   growth, MiB: " + ", ".join(
        f"{n} end-start {last[n] - first[n]:+.1f} / max-min {max(s[1][n] for s in samples) - min(s[1][n] for s in samples):.1f}"
        for n in SERVICES))
    half = len(samples) // 2
    if half >= 2:
        print("   second half only (after warm-up), max-min MiB: " + ", ".join(
            f"{n} {max(s[1][n] for s in samples[half:]) - min(s[1][n] for s in samples[half:]):.1f}"
            for n in SERVICES))
    print("   over the soak:")
    print("\n".join(kind_rows(results, wall, "     ")))
    print(f"     outcomes: {outcome_line(results)}")
    print(f"     {share.line()}")
    print(f"     {verdict(results)}", flush=True)


# ------------------------------------------------------------ main

def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def create_key(config: StackConfig) -> str:
    made = subprocess.run([str(REPO / ".venv/gateway/bin/python"), "-m", "gateway.admin", "create-key", "admin",
                           "--name", "bench"], env={**config.service_env(), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True, cwd=REPO)
    return made.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,4,8,16,32,48", help="clients at once, per ramp level")
    parser.add_argument("--level-s", type=float, default=60, help="seconds a ramp level keeps starting requests")
    parser.add_argument("--per-client", type=int, default=6, help="requests per client and level (at least 20)")
    parser.add_argument("--soak-s", type=float, default=600)
    parser.add_argument("--soak-concurrency", type=int, default=0, help="0: half the largest level without a 429")
    parser.add_argument("--sample-s", type=float, default=10, help="RSS sampling period in the soak")
    parser.add_argument("--row-s", type=float, default=60, help="soak table row period")
    parser.add_argument("--max-tokens", type=int, default=16, help="CHAT_MAX_TOKENS of the stack")
    # Above the gateway's own deadlines (CHAT_TIMEOUT_S, TRANSCRIBE_TIMEOUT_S: 300 s), so that a request
    # the stack lets wait too long shows as its 504 / SSE timeout event, and a client timeout means a hang.
    parser.add_argument("--timeout", type=float, default=310, help="client timeout per request, s")
    parser.add_argument("--skip-user-limits", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1,4,16, 5 s a level, 20 s soak")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.level_s, args.per_client = "1,4,16", 5, 2
        args.soak_s, args.sample_s, args.row_s = 20, 2, 5
    args.levels = [int(v) for v in args.levels.split(",")]

    command = " ".join(shlex.quote(a) for a in [".venv/test/bin/python", "bench/load_soak.py", *sys.argv[1:]])
    start_load = os.getloadavg()
    print(f"# {command}")
    print(f"# machine: {os.cpu_count()}-core {platform.machine()} CPU ({_cpu_model()}), "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average at start {_load()}"
          + (" (other work shares the machine: absolute latencies are noisy)" if start_load[0] >= 0.5 else ""))

    samples, rate = clips.wav_to_samples(clips.speak_wav(CLIP_TEXT))
    audio = clips.encode(samples, rate, "webm")
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        run_dir = Path(scratch) / "run"
        env = {"CHAT_MAX_TOKENS": str(args.max_tokens), "CHAT_TEMPERATURE": "0",
               # One bench user: the per-user limits are raised so that the services' own queues refuse first.
               "RATE_LIMIT_PER_MINUTE": "100000", "MAX_STREAMS_PER_USER": "1000"}
        config = StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="on", extra_env=env)
        print(f"# stack: native (scripts/stack.py), auth on, one API key; CHAT_MAX_TOKENS={args.max_tokens}, "
              "temperature 0; CHAT_WORKERS/CHAT_MAX_QUEUE and ASR_WORKERS/ASR_MAX_QUEUE at their defaults "
              "(1/8 each); RATE_LIMIT_PER_MINUTE=100000 and MAX_STREAMS_PER_USER=1000 for the ramp and the "
              "soak (phase 2 runs the defaults)")
        print(f"# clip: {len(samples) / rate:.1f} s Spanish espeak-ng speech ({CLIP_TEXT!r}), webm/opus "
              f"{len(audio) / 1024:.0f} KiB; chat prompt {PROMPT!r}", flush=True)
        stack = Stack(config)
        began = time.perf_counter()
        stack.start(timeout=900)
        try:
            print(f"stack ready in {time.perf_counter() - began:.1f} s", flush=True)
            headers = {"Authorization": f"Bearer {create_key(config)}"}
            # warm both paths once
            asyncio.run(closed_loop(config.url, headers, audio, 1, 4, 60, args.timeout))
            _, free_of_429 = ramp(stack, headers, audio, args)
            if not args.skip_user_limits:
                user_limits(stack, Path(scratch) / "front2", args)
            clients = args.soak_concurrency or max(1, free_of_429 // 2)
            soak(stack, headers, audio, clients, args)
        finally:
            stack.stop()
    print(f"\n# load average at end {_load()}; finished {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
