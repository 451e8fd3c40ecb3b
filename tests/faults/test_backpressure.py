"""A model service whose queue is full: the gateway answers 429 at once, with
Retry-After, never a 5xx or a wait (bench/load_soak.py ramps the whole stack
to that point; this is the same outcome on one call)."""

from __future__ import annotations

from tests.support.services import service_on
from tests.support.sse import read_events

SLOW = {"message": "Escribe una historia muy larga sobre un dragón y un caballero."}


def test_a_full_chat_queue_is_429_busy_with_retry_after_on_api_and_v1(tmp_path, ports, gateway):
    _, client = gateway
    # One generation at a time and no queue: a second caller finds the service full.
    with service_on("chat", ports["chat"], tmp_path, {"CHAT_WORKERS": "1", "CHAT_MAX_QUEUE": "0",
                                                      "CHAT_MAX_TOKENS": "32"}):
        with client.stream("POST", "/api/chat/stream", data=SLOW) as running:
            assert running.status_code == 200
            events = read_events(running)
            assert next(events)[0] == "meta"  # the first generation holds the only slot now
            refused = client.post("/api/chat", data={"message": "Hola"})
            refused_v1 = client.post("/v1/chat/completions", json={
                "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hola"}]})
            rest = [name for name, _ in events]
        assert refused.status_code == 429, refused.text
        assert refused.json()["error_type"] == "busy" and refused.headers["retry-after"] == "2"
        assert refused_v1.status_code == 429, refused_v1.text
        assert refused_v1.json()["error"]["type"] == "rate_limit_error"
        assert refused_v1.headers["retry-after"] == "2"
        assert rest[-1] == "done"  # the running answer was not disturbed
        assert client.post("/api/chat", data={"message": "Hola"}).status_code == 200  # free again
