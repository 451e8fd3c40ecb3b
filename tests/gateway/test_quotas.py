"""Per-user limits and CORS on the secured front (RATE_LIMIT_PER_MINUTE=20,
MAX_STREAMS_PER_USER=2, one allowed origin)."""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import SECURED_CORS_ORIGIN, SECURED_MAX_STREAMS, SECURED_RATE_PER_MINUTE


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_model_calls_beyond_the_rate_are_429_with_retry_after_for_that_user_only(secured):
    _, key = secured.new_user("hasty")
    _, other = secured.new_user("patient")
    with httpx.Client(base_url=secured.url, headers=bearer(key)) as client:
        # Calls without audio are refused (400) after they are counted: no model
        # work needed. The bucket refills one call every 60/rate s, so a slow
        # machine may get a few more through; counted, not assumed.
        started, codes = time.monotonic(), []
        while len(codes) < 2 * SECURED_RATE_PER_MINUTE and 429 not in codes:
            refused = client.post("/api/transcribe")
            codes.append(refused.status_code)
        refilled = math.ceil((time.monotonic() - started) * SECURED_RATE_PER_MINUTE / 60)
        assert codes[-1] == 429 and set(codes[:-1]) == {400}, codes
        assert SECURED_RATE_PER_MINUTE <= len(codes) - 1 <= SECURED_RATE_PER_MINUTE + refilled, codes
        assert refused.json()["error_type"] == "rate_limited"
        assert str(SECURED_RATE_PER_MINUTE) in refused.json()["error"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60 // SECURED_RATE_PER_MINUTE + 1
        # /v1 says the same in OpenAI's shape (a second try if a call refilled in between).
        for _ in range(2):
            v1 = client.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hola"}]})
            if v1.status_code == 429:
                break
        assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
        # Listing data is not a model call.
        assert client.get("/api/conversations").status_code == 200
    # Another user is not affected.
    assert httpx.post(secured.url + "/api/transcribe", headers=bearer(other)).status_code == 400


def test_streams_beyond_the_per_user_limit_are_429_until_one_ends(secured):
    _, key = secured.new_user("streamer")
    ws_url = secured.url.replace("http://", "ws://") + "/api/transcribe/stream"
    config = json.dumps({"mime_type": "audio/webm;codecs=opus", "language": "es"})
    with ExitStack() as held:
        # Live-dictation sockets hold a stream slot for as long as they are open.
        sockets = [held.enter_context(connect(ws_url, additional_headers=bearer(key)))
                   for _ in range(SECURED_MAX_STREAMS)]
        for socket in sockets:
            socket.send(config)
        extra = httpx.post(secured.url + "/api/chat/stream", data={"message": "hola"}, headers=bearer(key))
        assert extra.status_code == 429 and extra.json()["error_type"] == "rate_limited"
        assert "streams" in extra.json()["error"] and extra.headers["retry-after"] == "1"
        # A third socket is refused the same way, as an error event and close code 4429.
        with connect(ws_url, additional_headers=bearer(key)) as third:
            assert json.loads(third.recv(timeout=30))["error_type"] == "rate_limited"
            with pytest.raises(ConnectionClosed) as closed:
                third.recv(timeout=30)
            assert closed.value.rcvd.code == 4429
        sockets[0].close()
        # A closed stream gives its slot back (once the gateway has seen the socket close).
        deadline = time.monotonic() + 10
        while True:
            with httpx.stream("POST", secured.url + "/api/chat/stream", data={"message": "hola"},
                              headers=bearer(key), timeout=120) as response:
                if response.status_code != 429 or time.monotonic() > deadline:
                    break
            time.sleep(0.2)
        assert response.status_code == 200


def test_cors_answers_the_configured_origin_only(secured, nginx_url):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(secured.url + "/v1/chat/completions", headers={"Origin": SECURED_CORS_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == SECURED_CORS_ORIGIN
    assert "access-control-allow-credentials" not in allowed.headers  # cookies stay same-origin
    other = httpx.options(secured.url + "/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    # Off by default: the shared stack answers no origin.
    default = httpx.get(nginx_url + "/healthz", headers={"Origin": SECURED_CORS_ORIGIN})
    assert "access-control-allow-origin" not in default.headers
