"""The whole stack through nginx, as a browser or curl uses it: the seed's
endpoints, streaming chat, speech to text, bad input, TLS and the static page."""

from __future__ import annotations

import os
import ssl
import unicodedata

import httpx
import numpy as np
import pytest

from tests.support.audio_clips import encode, speech
from tests.support.sse import read_events

SPANISH_PROMPT = "Hola, quiero saber el tiempo de mañana en Madrid"


def plain(text: str) -> str:
    """Lowercase without accents, so assertions don't hinge on Whisper's spelling."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@pytest.fixture(scope="module")
def client(nginx_url):
    with httpx.Client(base_url=nginx_url, timeout=180) as http:
        yield http


@pytest.fixture(scope="module")
def spanish_webm() -> bytes:
    return speech(SPANISH_PROMPT, "webm")


def test_readyz_through_nginx_reports_both_services_serving(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["dependencies"] == {"asr": "SERVING", "chat": "SERVING"}


def test_transcribe_a_spanish_webm_clip_like_the_seed(client, spanish_webm):
    response = client.post("/api/transcribe", files={"audio": ("clip.webm", spanish_webm, "audio/webm")})
    assert response.status_code == 200, response.text
    body = response.json()
    text = plain(body["transcription"])
    assert "tiempo" in text and "madrid" in text, body
    assert body["language"] == "es"
    assert body["segments"] and body["duration"] > 1


@pytest.mark.parametrize("fmt, mime", [("ogg", "audio/ogg"), ("mp4", "audio/mp4"), ("wav", "audio/wav")])
def test_transcribe_accepts_what_other_browsers_and_files_give(client, fmt, mime):
    clip = speech(SPANISH_PROMPT, fmt)
    response = client.post("/api/transcribe", files={"audio": (f"clip.{fmt}", clip, mime)})
    assert response.status_code == 200, response.text
    assert "madrid" in plain(response.json()["transcription"])


def test_chat_answers_with_the_seeds_json_shape(client):
    response = client.post("/api/chat", data={"message": "Hola, ¿cómo estás?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0
    assert body["done_reason"] in ("stop", "length")


def test_streaming_chat_sends_meta_then_deltas_then_done(client):
    with client.stream("POST", "/api/chat/stream", data={"message": "Escribe un poema corto sobre el sol."}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done"
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert len(deltas) >= 2 and "".join(deltas).strip()
    assert events[-1][1]["usage"]["completion_tokens"] > 0


def test_https_port_serves_the_page_and_the_api_with_the_self_signed_certificate(https_url, stack):
    cert = stack.config.tls_dir / "cert.pem"
    with httpx.Client(base_url=https_url, verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as https:
        assert https.get("/healthz").json() == {"status": "ok"}
        page = https.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_static_page_and_spa_fallback(client):
    assert 'id="message-input"' in client.get("/").text
    fallback = client.get("/conversaciones/123")
    assert fallback.status_code == 200 and 'id="message-input"' in fallback.text


# --- bad input: a clear 4xx, and the stack keeps serving --------------------

def test_chat_without_message_is_400_with_the_seeds_error_body(client):
    response = client.post("/api/chat", data={"other": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "message is required"


def test_transcribe_without_a_file_is_400(client):
    response = client.post("/api/transcribe", data={"language": "es"})
    assert response.status_code == 400
    assert "audio is required" in response.json()["error"]


def test_empty_audio_file_is_400(client):
    response = client.post("/api/transcribe", files={"audio": ("clip.webm", b"", "audio/webm")})
    assert response.status_code == 400
    assert "empty" in response.json()["error"]


def test_random_bytes_as_audio_are_400_naming_the_problem(client):
    response = client.post("/api/transcribe", files={"audio": ("clip.webm", os.urandom(20000), "audio/webm")})
    assert response.status_code == 400
    assert "audio" in response.json()["error"].lower()
    assert response.json()["error_type"] == "invalid_audio"


def test_audio_longer_than_the_limit_is_413_naming_the_limit(client):
    from tests.conftest import TEST_MAX_AUDIO_SECONDS

    rate = 8000
    samples = np.zeros(rate * (TEST_MAX_AUDIO_SECONDS + 5), dtype=np.float32)
    response = client.post("/api/transcribe", files={"audio": ("long.wav", encode(samples, rate, "wav"), "audio/wav")})
    assert response.status_code == 413
    assert response.json()["error_type"] == "audio_too_long"
    assert str(TEST_MAX_AUDIO_SECONDS) in response.json()["error"]


def test_a_text_file_as_audio_is_415(client):
    response = client.post("/api/transcribe", files={"audio": ("notes.txt", b"hola", "text/plain")})
    assert response.status_code == 415
    assert response.json()["error_type"] == "unsupported_media_type"


def test_a_non_image_as_image_is_400_naming_the_problem(client):
    response = client.post("/api/chat", data={"message": "¿Qué ves?"},
                           files={"image": ("foto.png", b"definitely not a png", "image/png")})
    assert response.status_code == 400
    assert "not an image" in response.json()["error"]


def test_an_image_for_the_text_only_model_is_400_naming_the_setting(client, tiny_png):
    response = client.post("/api/chat", data={"message": "¿Qué ves?"},
                           files={"image": ("foto.png", tiny_png, "image/png")})
    assert response.status_code == 400
    assert "CHAT_BACKEND=ollama" in response.json()["error"]


def test_an_upload_over_the_limit_is_413_from_nginx_before_the_gateway(client, stack):
    too_big = b"\0" * ((stack.config.max_upload_mb + 1) * 1024 * 1024)
    response = client.post("/api/transcribe", files={"audio": ("big.wav", too_big, "audio/wav")})
    assert response.status_code == 413
    assert f"{stack.config.max_upload_mb} MB" in response.json()["error"]


def test_the_gateway_itself_also_refuses_oversized_bodies(gateway_url, stack):
    too_big = b"\0" * ((stack.config.max_upload_mb + 1) * 1024 * 1024)
    response = httpx.post(f"{gateway_url}/api/chat", data={"message": "hola"},
                          files={"image": ("big.png", too_big, "image/png")}, timeout=60)
    assert response.status_code == 413
    assert response.json()["error_type"] == "payload_too_large"


def test_the_stack_still_serves_after_bad_input(client, spanish_webm):
    for _ in range(3):
        client.post("/api/transcribe", files={"audio": ("x.webm", os.urandom(5000), "audio/webm")})
        client.post("/api/chat", data={"message": "hola"}, files={"image": ("x.png", b"junk", "image/png")})
    assert client.get("/readyz").status_code == 200
    transcript = client.post("/api/transcribe", files={"audio": ("clip.webm", spanish_webm, "audio/webm")})
    assert "madrid" in plain(transcript.json()["transcription"])
    assert client.post("/api/chat", data={"message": "Hola"}).json()["message"]["content"].strip()
