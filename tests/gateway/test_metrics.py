"""`/metrics` on the gateway itself (operators scrape it directly; nginx does not
proxy it): counters move when chats and transcriptions go through the stack."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.audio_clips import speech
from tests.support.metrics import samples_of, scrape, value

CHAT_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(nginx_url) -> OpenAI:
    with OpenAI(base_url=f"{nginx_url}/v1", api_key="no-auth-yet", timeout=180, max_retries=0) as sdk:
        yield sdk


def test_a_streamed_chat_moves_requests_latency_time_to_first_token_and_tokens(client, gateway_url):
    before = scrape(gateway_url)
    stream = client.chat.completions.create(model=CHAT_MODEL, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Escribe una frase sobre el mar."}])
    usage = list(stream)[-1].usage
    after = scrape(gateway_url)

    route = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    requests = "gateway_http_requests_total"
    assert value(after, requests, **route) == value(before, requests, **route) + 1
    count = "gateway_http_request_duration_seconds_count"
    assert value(after, count, **route) == value(before, count, **route) + 1
    for histogram in ("gateway_chat_time_to_first_token_seconds_count", "gateway_chat_tokens_per_second_count"):
        assert value(after, histogram, model=CHAT_MODEL) == value(before, histogram, model=CHAT_MODEL) + 1, histogram
    tokens = "gateway_chat_tokens_total"
    assert value(after, tokens, model=CHAT_MODEL, kind="completion") == \
        value(before, tokens, model=CHAT_MODEL, kind="completion") + usage.completion_tokens


def test_a_transcription_moves_latency_and_audio_seconds(client, gateway_url):
    clip = speech("Hola, quiero saber el tiempo de mañana en Madrid", "webm")
    before = scrape(gateway_url)
    result = client.audio.transcriptions.create(model="whisper-1", file=("clip.webm", clip, "audio/webm"),
                                                language="es", response_format="verbose_json")
    after = scrape(gateway_url)

    assert value(after, "gateway_transcriptions_total") == value(before, "gateway_transcriptions_total") + 1
    latency = "gateway_transcription_duration_seconds_count"
    assert value(after, latency) == value(before, latency) + 1
    audio = "gateway_transcription_audio_seconds_total"
    assert value(after, audio) - value(before, audio) == pytest.approx(result.duration, abs=0.01)
    route = {"method": "POST", "route": "/v1/audio/transcriptions", "status": "200"}
    requests = "gateway_http_requests_total"
    assert value(after, requests, **route) == value(before, requests, **route) + 1


def test_errors_are_counted_by_type_and_failed_grpc_calls_by_code(client, gateway_url):
    before = scrape(gateway_url)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hola"}])
    after = scrape(gateway_url)
    errors = {"type": "model_not_found", "status": "404"}
    assert value(after, "gateway_errors_total", **errors) == value(before, "gateway_errors_total", **errors) + 1
    failed = {"method": "ChatService/Chat", "code": "NOT_FOUND"}
    assert value(after, "gateway_backend_errors_total", **failed) == \
        value(before, "gateway_backend_errors_total", **failed) + 1


def test_the_api_routes_are_counted_by_their_template_too(nginx_url, gateway_url):
    before = scrape(gateway_url)
    assert httpx.get(f"{nginx_url}/v1/models/{CHAT_MODEL}", timeout=30).status_code == 200
    assert httpx.post(f"{nginx_url}/api/chat", data={}, timeout=30).status_code == 400
    after = scrape(gateway_url)
    for labels in ({"method": "GET", "route": "/v1/models/{model}", "status": "200"},
                   {"method": "POST", "route": "/api/chat", "status": "400"}):
        assert value(after, "gateway_http_requests_total", **labels) == \
            value(before, "gateway_http_requests_total", **labels) + 1, labels


def test_scrapes_are_not_counted(gateway_url):
    scrape(gateway_url)
    samples = scrape(gateway_url)
    assert not any(name == "gateway_http_requests_total" and ("route", "/metrics") in labels
                   for name, labels in samples)


def test_nginx_does_not_expose_metrics(nginx_url, gateway_url):
    assert "gateway_http_requests_total" in httpx.get(f"{gateway_url}/metrics", timeout=10).text
    through_nginx = httpx.get(f"{nginx_url}/metrics", timeout=10)
    assert "gateway_http_requests_total" not in through_nginx.text


def test_a_client_leaving_mid_stream_cancels_the_grpc_call(nginx_url, gateway_url):
    before = scrape(gateway_url)
    body = {"model": CHAT_MODEL, "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Escribe una historia muy larga sobre un dragón."}]}
    with httpx.Client(base_url=nginx_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line.removeprefix("data: "))["choices"]
                    received += bool(choices and choices[0]["delta"].get("content"))
                if received == 3:
                    break  # leave after three pieces of text: closing the connection cancels
            assert received == 3
    cancelled = {"method": "ChatService/Chat", "code": "CANCELLED"}
    deadline = time.monotonic() + 10
    while value(after := scrape(gateway_url), "gateway_backend_errors_total", **cancelled) == \
            value(before, "gateway_backend_errors_total", **cancelled) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value(after, "gateway_backend_errors_total", **cancelled) == \
        value(before, "gateway_backend_errors_total", **cancelled) + 1


def test_open_streams_and_calls_in_flight_show_while_a_stream_is_open(nginx_url, gateway_url):
    chat = {"method": "ChatService/Chat"}
    with httpx.Client(base_url=nginx_url, timeout=60) as http:
        with http.stream("POST", "/api/chat/stream", data={"message": "Escribe un poema largo."}) as response:
            assert response.status_code == 200
            during = samples_of(gateway_url)
    assert value(during, "gateway_open_streams") >= 1
    assert value(during, "gateway_backend_calls_in_flight", **chat) >= 1
    deadline = time.monotonic() + 10
    while value(after := samples_of(gateway_url), "gateway_open_streams") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value(after, "gateway_open_streams") == 0
    assert value(after, "gateway_backend_calls_in_flight", **chat) == 0
