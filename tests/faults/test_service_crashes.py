"""A model service that dies mid-request: the client gets a clear error, the
gateway stays up, and once the service is back the same gateway serves again
(no gateway restart). A service told to stop (SIGTERM) finishes what it is
doing first. Each test runs its own services: killing the shared stack's
would break the rest of the suite."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.support.audio_clips import speech
from tests.support.services import service_on
from tests.support.sse import read_events

def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def in_flight(client: httpx.Client, method: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'gateway_backend_calls_in_flight{{method="{method}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


LONG_ANSWER = {"message": "Escribe una historia muy larga sobre un dragón y un caballero."}


def test_the_chat_service_dying_mid_answer_ends_the_stream_with_an_error_and_its_return_is_served(
        tmp_path, ports, gateway):
    gateway_process, client = gateway
    conversation = client.post("/api/conversations", json={}).json()["id"]
    with service_on("chat", ports["chat"], tmp_path, {"CHAT_MAX_TOKENS": "200"}) as chat:
        with client.stream("POST", "/api/chat/stream", data={**LONG_ANSWER, "conversation_id": conversation}) \
                as response:
            assert response.status_code == 200
            events = read_events(response)
            name, _ = next(events)
            assert name == "meta"
            received = ""
            for name, data in events:
                if name == "delta" and not chat.process.returncode:
                    received += data["content"]
                    chat.process.send_signal(signal.SIGKILL)  # dies after the first piece
                    chat.process.wait()
                    continue
                last = (name, data)
        assert last[0] == "error" and last[1]["error_type"] == "unavailable", last
    assert gateway_process.running()
    # Stored once the gateway has closed the stream (a moment after the client read its end).
    stored = wait_for(lambda: (m := client.get(f"/api/conversations/{conversation}").json()["messages"][-1])
                      ["status"] != "streaming" and m, 10, "the answer was not stored")
    assert stored["status"] == "incomplete" and stored["content"].startswith(received) and received

    # While it is down: 503 at once, and /readyz says which dependency.
    down = client.post("/api/chat", data={"message": "hola"})
    assert down.status_code == 503 and down.json()["error_type"] == "unavailable"
    assert client.get("/readyz").json()["dependencies"]["chat"].startswith("UNREACHABLE")

    with service_on("chat", ports["chat"], tmp_path):  # the replacement, on the same port
        answer = wait_for(lambda: (r := client.post("/api/chat", data={"message": "hola"})).status_code == 200 and r,
                          60, "the gateway served again after the chat service came back")
        assert answer.json()["message"]["content"]
    assert gateway_process.running()


def test_the_asr_service_dying_mid_transcription_is_503_and_its_return_is_served(tmp_path, ports, gateway):
    gateway_process, client = gateway
    clip = speech("Hola, quiero saber el tiempo de mañana en Madrid y en Barcelona, por favor.", "wav")
    with service_on("asr", ports["asr"], tmp_path) as asr:
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(response=client.post(
            "/api/transcribe", files={"audio": ("a.wav", clip, "audio/wav")})))
        thread.start()
        # Killed once the gateway's call is at the service (its in-flight gauge says so).
        wait_for(lambda: in_flight(client, "Transcription/Transcribe") >= 1, 30, "the call did not start")
        asr.process.send_signal(signal.SIGKILL)
        asr.process.wait()
        thread.join(timeout=60)
    response = outcome["response"]
    assert response.status_code == 503 and response.json()["error_type"] == "unavailable", response.text
    assert gateway_process.running()

    with service_on("asr", ports["asr"], tmp_path):
        answer = wait_for(lambda: (r := client.post("/api/transcribe", files={"audio": ("a.wav", clip, "audio/wav")}))
                          .status_code == 200 and r, 60, "the gateway served again after the ASR came back")
        assert "tiempo" in answer.json()["transcription"].lower()


def stream_with_sigterm_mid_answer(client: httpx.Client, process) -> list[str]:
    """Streams an answer and sends `process` SIGTERM at its first piece; returns the event names seen."""
    with client.stream("POST", "/api/chat/stream", data=LONG_ANSWER) as response:
        assert response.status_code == 200
        names = []
        for name, _ in read_events(response):
            names.append(name)
            if name == "delta" and names.count("delta") == 1:
                process.send_signal(signal.SIGTERM)  # asked to stop mid-answer, once (a second one forces the exit)
    return names


def test_sigterm_lets_the_answer_in_progress_finish_before_the_chat_service_exits(tmp_path, ports, gateway):
    _, client = gateway
    # Short, so that a slow shared machine still finishes within the grace (chatbot_protos/serving.py).
    with service_on("chat", ports["chat"], tmp_path, {"CHAT_MAX_TOKENS": "8"}) as chat:
        names = stream_with_sigterm_mid_answer(client, chat.process)
        assert names[-1] == "done" and "error" not in names, names
        assert chat.process.wait(timeout=60) == 0


def test_sigterm_lets_the_gateway_finish_the_stream_in_progress_before_it_exits(tmp_path, ports, gateway):
    service, client = gateway
    # Short, so that a slow shared machine still finishes within the gateway's grace (server.py).
    with service_on("chat", ports["chat"], tmp_path, {"CHAT_MAX_TOKENS": "8"}):
        names = stream_with_sigterm_mid_answer(client, service.process)
        assert names[-1] == "done" and "error" not in names, names
        # uvicorn shuts down gracefully, then ends by the signal it caught (so the status says why it stopped).
        assert service.process.wait(timeout=60) == -signal.SIGTERM
        log = service.log_path.read_text(errors="replace")
        assert "Application shutdown complete" in log and "timeout graceful shutdown exceeded" not in log
