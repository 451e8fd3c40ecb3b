"""WebSocket `/api/transcribe/stream` through nginx: a browser's live dictation.

The client speaks the protocol a page would: a JSON text frame with the MIME
type and language, binary frames of a growing webm/opus recording, then
`{"type": "end"}`; it reads JSON events until the gateway closes the socket.
"""

from __future__ import annotations

import json
import time
import unicodedata

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import audio_clips as clips
from tests.support.metrics import scrape_when, samples_of, value

LONGER = "Buenos días. Quiero saber el tiempo de mañana en Madrid, por favor."
TIMEOUT = 180


def plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@pytest.fixture(scope="module")
def ws_url(nginx_url) -> str:
    return nginx_url.replace("http://", "ws://", 1) + "/api/transcribe/stream"


@pytest.fixture(scope="module")
def madrid() -> tuple[bytes, float]:
    samples, rate = clips.wav_to_samples(clips.speak_wav(LONGER))
    return clips.encode(samples, rate, "webm"), len(samples) / rate


def send_audio(ws, data: bytes, frame: int, seconds: float = 0.0) -> None:
    pieces = [data[i:i + frame] for i in range(0, len(data), frame)]
    for piece in pieces:
        ws.send(piece)
        if seconds:
            time.sleep(seconds / len(pieces))


def events_until_close(ws) -> tuple[list[dict], int | None]:
    events = []
    try:
        while True:
            events.append(json.loads(ws.recv(timeout=TIMEOUT)))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None


STREAMS = "gateway_dictation_streams_total"
STREAM_METHOD = "Transcription/StreamingTranscribe"


def after_stream_ends(gateway_url: str, before: dict, outcome: str) -> dict:
    """The gateway's samples once it has counted one more socket ending with `outcome`
    (the client sees the close a moment before the gateway counts it)."""
    wanted = value(before, STREAMS, outcome=outcome) + 1
    return scrape_when(gateway_url, lambda samples: value(samples, STREAMS, outcome=outcome) >= wanted)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_live_dictation_streams_interim_then_final_events(ws_url, madrid, gateway_url):
    data, duration = madrid
    before = samples_of(gateway_url)
    with connect(ws_url, open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps({"mime_type": "audio/webm;codecs=opus", "language": "es"}))
        # Frames bigger than the 16 KiB gRPC chunk limit: the gateway cuts them.
        send_audio(ws, data[:20_000], 20_000)
        send_audio(ws, data[20_000:], 1500, seconds=duration)
        ws.send(json.dumps({"type": "end"}))
        events, code = events_until_close(ws)

    assert code == 1000, events
    interims = [e for e in events if e["type"] == "interim"]
    finals = [e for e in events if e["type"] == "final"]
    assert interims, events
    assert all(set(e) >= {"text", "language", "stability"} for e in events)
    assert all(0.0 <= e["stability"] <= 1.0 for e in interims)
    assert len(finals) == 1 and events[-1] is finals[0], events
    assert "madrid" in plain(finals[0]["text"]) and finals[0]["language"] == "es"

    # /metrics: the socket, its audio, its results and the wait after the end frame.
    after = after_stream_ends(gateway_url, before, "completed")
    assert moved(before, after, STREAMS, outcome="completed") == 1
    assert moved(before, after, "gateway_dictation_audio_bytes_total") == len(data)
    assert moved(before, after, "gateway_dictation_results_total", kind="interim") == len(interims)
    assert moved(before, after, "gateway_dictation_results_total", kind="final") == 1
    assert moved(before, after, "gateway_dictation_finish_seconds_count") == 1
    assert 0 < moved(before, after, "gateway_dictation_finish_seconds_sum") < TIMEOUT
    assert value(after, "gateway_backend_calls_in_flight", method=STREAM_METHOD) == 0


def test_first_frame_that_is_not_the_json_config_is_an_error_event(ws_url, madrid):
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(madrid[0][:1000])
        events, code = events_until_close(ws)
    assert code == 4400
    assert events == [{"type": "error", "error": events[0]["error"], "error_type": "invalid_request"}]
    assert "first frame" in events[0]["error"]


def test_undecodable_audio_ends_with_the_services_error(ws_url, gateway_url):
    before = samples_of(gateway_url)
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"mime_type": "audio/webm"}))
        ws.send(bytes(range(256)) * 16)
        ws.send(json.dumps({"type": "end"}))
        events, code = events_until_close(ws)
    assert code == 4400
    assert events[-1]["type"] == "error" and events[-1]["error_type"] == "invalid_audio", events
    # Counted by its error type, and as a failed call to the ASR service.
    after = after_stream_ends(gateway_url, before, "invalid_audio")
    assert moved(before, after, STREAMS, outcome="invalid_audio") == 1
    assert moved(before, after, "gateway_backend_errors_total", method=STREAM_METHOD, code="INVALID_ARGUMENT") == 1


def test_unknown_language_is_refused_with_an_error_event(ws_url, madrid):
    with connect(ws_url, open_timeout=30) as ws:
        ws.send(json.dumps({"mime_type": "audio/webm", "language": "klingon"}))
        ws.send(madrid[0][:4000])
        events, code = events_until_close(ws)
    assert code == 4400
    assert events[-1]["type"] == "error" and "unknown language" in events[-1]["error"], events


def test_closing_the_socket_cancels_the_transcription(ws_url, madrid, stack, gateway_url):
    data, duration = madrid
    before = samples_of(gateway_url)
    request_id = f"ws-cancel-{time.time_ns()}"
    with connect(ws_url, open_timeout=30, additional_headers={"X-Request-ID": request_id}) as ws:
        ws.send(json.dumps({"mime_type": "audio/webm;codecs=opus"}))
        send_audio(ws, data[: len(data) * 2 // 3], 1500, seconds=duration * 2 / 3)
        first = json.loads(ws.recv(timeout=TIMEOUT))
        assert first["type"] == "interim", first
    # The socket is closed with no "end": the ASR service must hear of it.
    log = stack.config.run_dir / "logs" / "asr.log"
    expected = f"[{request_id}] streaming transcription"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text(errors="replace").splitlines() if expected in line]
        if lines:
            break
        time.sleep(0.2)
    assert lines and "cancelled by the client" in lines[0], lines
    after = after_stream_ends(gateway_url, before, "client_left")
    assert moved(before, after, STREAMS, outcome="client_left") == 1
    assert moved(before, after, "gateway_backend_errors_total", method=STREAM_METHOD, code="CANCELLED") == 1
    assert value(after, "gateway_backend_calls_in_flight", method=STREAM_METHOD) == 0
