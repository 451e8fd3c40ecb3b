"""chatbot_protos.serving: the one place that assembles, runs and stops the
gRPC model servers. Servers bind port 0; where a signal must end the process,
a small demo server runs as a process of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from chatbot_protos.serving import CannotListen, ModelServer, host_port, in_daemon_thread, run_service
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "demo.v1.Demo"
NOT_SERVING, SERVING = health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING


async def health(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                timeout=5)
    return reply.status


def test_health_is_not_serving_while_the_model_loads_then_serving_and_sigterm_exits_0():
    seen: dict[str, list[int]] = {"loading": [], "loaded": []}

    async def scenario() -> int:
        server = ModelServer("demo", [SERVICE], 1 << 20)
        port = server.bind("127.0.0.1", 0)
        may_finish = asyncio.Event()

        async def load() -> None:
            await may_finish.wait()

        running = asyncio.create_task(server.run(load, model="demo-model", grace_seconds=1))
        await _until(lambda: _answers(port))
        seen["loading"] = [await health(port, name) for name in ("", SERVICE)]
        may_finish.set()
        await _until(lambda: _is_serving(port))
        seen["loaded"] = [await health(port, name) for name in ("", SERVICE)]
        # Only signal ourselves once run() has taken SIGTERM over, or pytest would die.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(running, 10)

    assert asyncio.run(scenario()) == 0
    assert seen == {"loading": [NOT_SERVING, NOT_SERVING], "loaded": [SERVING, SERVING]}


def test_a_model_that_fails_to_load_exits_1_with_a_one_line_reason(caplog):
    async def scenario() -> int:
        server = ModelServer("demo", [SERVICE], 1 << 20)
        server.bind("127.0.0.1", 0)

        async def load() -> None:
            raise RuntimeError("disk full\nsecond line of detail")

        return await asyncio.wait_for(server.run(load, model="demo-model", grace_seconds=1), 10)

    with caplog.at_level(logging.INFO, logger="chatbot_protos.serving"):
        assert asyncio.run(scenario()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["cannot load model 'demo-model': disk full -- demo exits with status 1"]


def test_a_port_in_use_is_a_clear_error_and_exit_status_1(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def serve() -> int:
            ModelServer("demo", [SERVICE], 1 << 20).bind("127.0.0.1", port)
            return 0

        with caplog.at_level(logging.ERROR, logger="chatbot_protos.serving"):
            assert run_service(serve()) == 1
    assert f"demo cannot listen on 127.0.0.1:{port}" in caplog.text


def test_a_port_another_service_serves_on_is_refused_not_shared():
    async def two_on_one_port() -> None:
        first = ModelServer("first", [SERVICE], 1 << 20)
        port = first.bind("127.0.0.1", 0)
        await first.server.start()
        try:
            with pytest.raises(CannotListen, match=f"second cannot listen on 127.0.0.1:{port}"):
                ModelServer("second", [SERVICE], 1 << 20).bind("127.0.0.1", port)
        finally:
            await first.server.stop(None)

    asyncio.run(two_on_one_port())


def test_bind_raises_cannot_listen_naming_the_address():
    async def bind() -> None:
        ModelServer("demo", [SERVICE], 1 << 20).bind("256.0.0.1", 0)

    with pytest.raises(CannotListen, match=r"256\.0\.0\.1:0"):
        asyncio.run(bind())


def test_host_port_brackets_ipv6_literals_only():
    assert host_port("::1", 50051) == "[::1]:50051"
    assert host_port("[::]", 1) == "[::]:1"
    assert host_port("127.0.0.1", 2) == "127.0.0.1:2"


def test_in_daemon_thread_returns_the_result_and_raises_the_error_from_a_daemon_thread():
    threads: list[threading.Thread] = []

    def work() -> int:
        threads.append(threading.current_thread())
        return 42

    def fail() -> None:
        raise ValueError("no model here")

    async def scenario() -> int:
        with pytest.raises(ValueError, match="no model here"):
            await in_daemon_thread(fail)
        return await in_daemon_thread(work, "named-loader")

    assert asyncio.run(scenario()) == 42
    assert threads[0].daemon and threads[0].name == "named-loader"


# --- in a process of its own: signals end it ---------------------------------

DEMO = r"""
import asyncio, sys, time
import grpc
from chatbot_protos.serving import ModelServer, in_daemon_thread, run_service

async def slow(request, context):
    print("call started", flush=True)
    await asyncio.sleep(120)
    return b""

async def serve():
    server = ModelServer("demo", ["demo.v1.Demo"], 1 << 20)
    server.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "demo.v1.Demo", {"Slow": grpc.unary_unary_rpc_method_handler(slow)}),))
    print(f"listening on {server.bind('127.0.0.1', 0)}", flush=True)

    async def load():
        if sys.argv[1] == "endless-download":
            await in_daemon_thread(lambda: time.sleep(3600))

    return await server.run(load, model="demo", grace_seconds=120)

sys.exit(run_service(serve()))
"""


def start_demo(tmp_path, mode: str) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "demo_server.py"
    script.write_text(DEMO)
    process = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("listening on "), line
    return process, int(line.split()[-1])


def test_sigterm_during_a_blocking_load_exits_0_at_once(tmp_path):
    process, port = start_demo(tmp_path, "endless-download")
    try:
        assert asyncio.run(_until_answers(port)) == NOT_SERVING
        process.send_signal(signal.SIGTERM)
        # A thread joined at exit (asyncio.to_thread) would wait for the hour-long "download".
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_calls_in_flight_hold_the_stop_until_a_second_signal_exits_at_once(tmp_path):
    process, port = start_demo(tmp_path, "instant-load")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/demo.v1.Demo/Slow").future(b"")
            assert process.stdout.readline() == "call started\n"
            process.send_signal(signal.SIGTERM)
            time.sleep(1.5)
            assert process.poll() is None, "the first signal must wait for the call in flight"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 128 + signal.SIGTERM
            call.cancel()
    finally:
        process.kill()
        process.wait()


async def _until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _answers(port: int) -> bool:
    try:
        await health(port, "")
    except grpc.RpcError:
        return False
    return True


async def _until_answers(port: int) -> int:
    await _until(lambda: _answers(port))
    return await health(port, SERVICE)


async def _is_serving(port: int) -> bool:
    return await health(port, SERVICE) == SERVING
