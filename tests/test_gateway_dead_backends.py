"""A gateway whose model services are down answers 503 with the error body,
and keeps running."""

from __future__ import annotations

import httpx
import pytest

from scripts.stack import free_port
from tests.support.services import gateway_service


@pytest.fixture(scope="module")
def lonely_gateway(tmp_path_factory):
    env = {"ASR_ADDR": f"127.0.0.1:{free_port()}", "CHAT_ADDR": f"127.0.0.1:{free_port()}"}
    with gateway_service(tmp_path_factory.mktemp("gateway"), env) as (service, url):
        yield url, service


def test_healthz_is_alive_but_readyz_is_503_naming_each_dependency(lonely_gateway):
    url, _ = lonely_gateway
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert set(ready.json()["dependencies"]) == {"asr", "chat"}
    assert all(state.startswith("UNREACHABLE") for state in ready.json()["dependencies"].values())


@pytest.mark.parametrize("path, form, files", [
    ("/api/chat", {"message": "hola"}, None),
    ("/api/chat/stream", {"message": "hola"}, None),
    ("/api/transcribe", {}, {"audio": ("a.webm", b"\x1aE\xdf\xa3 some webm", "audio/webm")}),
])
def test_calls_to_a_dead_service_are_503_with_a_clear_message(lonely_gateway, path, form, files):
    url, service = lonely_gateway
    response = httpx.post(f"{url}{path}", data=form, files=files, timeout=30)
    assert response.status_code == 503
    assert response.json()["error_type"] == "unavailable"
    assert "not reachable" in response.json()["error"]
    assert service.running()
