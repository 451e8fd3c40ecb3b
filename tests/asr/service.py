"""Start a real asr-service process for tests that need one configured their way.

The suite's shared ``asr_addr`` fixture serves the ordinary tests; this helper
is for the few that need other settings (a tiny queue, a short length limit),
started the same way ``make run`` does: ``.venv/asr/bin/python -m asr_service``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ASR_PYTHON = ROOT / ".venv" / "asr" / "bin" / "python"
SERVICE_NAME = "chatbot.asr.v1.Transcription"
_LISTENING = re.compile(r"asr-service listening on (\S+:\d+)")


@contextmanager
def running_asr_service(env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Run asr-service on a free port until the block exits; yield "host:port".

    Waits until health reports SERVING. The process log is kept (last lines)
    and shown if start-up fails, so a broken start says why.
    """
    full_env = {
        **os.environ,
        "ASR_HOST": "127.0.0.1",
        "ASR_PORT": "0",
        "MODELS_DIR": os.environ.get("MODELS_DIR", str(ROOT / ".cache" / "models")),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [str(ASR_PYTHON), "-m", "asr_service"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: deque[str] = deque(maxlen=200)
    found = threading.Event()
    address: list[str] = []

    def pump() -> None:
        # Keeps reading for the whole run so a full pipe never blocks the server.
        for line in proc.stderr:
            log.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and not found.is_set():
                address.append(match.group(1))
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("asr-service did not start:\n" + "\n".join(log))
        wait_until_serving(address[0], deadline, proc, log)
        yield address[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_serving(addr: str, deadline: float, proc: subprocess.Popen, log: deque[str]) -> None:
    """Poll grpc.health.v1 until the service reports SERVING."""
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"asr-service exited with {proc.returncode}:\n" + "\n".join(log))
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError("asr-service never reported SERVING:\n" + "\n".join(log))
