"""Every gateway log line carries the request id: as text by default, as one
JSON object per line with GATEWAY_LOG_FORMAT=json."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.services import gateway_service


@pytest.fixture(scope="module")
def json_gateway(tmp_path_factory, chat_addr, asr_addr):
    """A second gateway, logging JSON, in front of the stack's model services."""
    env = {"ASR_ADDR": asr_addr, "CHAT_ADDR": chat_addr, "GATEWAY_LOG_FORMAT": "json"}
    with gateway_service(tmp_path_factory.mktemp("gateway-json"), env) as (service, url):
        yield url, service


def test_json_logs_are_one_object_per_line_with_the_request_id(json_gateway):
    url, service = json_gateway
    response = httpx.get(f"{url}/v1/models", headers={"X-Request-ID": "json-log-test-1"}, timeout=30)
    assert response.status_code == 200 and response.headers["x-request-id"] == "json-log-test-1"
    httpx.post(f"{url}/v1/chat/completions", json={"model": "no-such-model", "messages": [
        {"role": "user", "content": "hola"}]}, headers={"X-Request-ID": "json-log-test-2"}, timeout=30)
    service.stop()  # flushes and closes the log
    lines = [json.loads(line) for line in service.log_path.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message", "request_id"} <= set(entry) for entry in lines)
    access = {entry["request_id"]: entry for entry in lines if entry["logger"] == "uvicorn.access"}
    assert access["json-log-test-1"]["path"] == "/v1/models" and access["json-log-test-1"]["status"] == 200
    assert access["json-log-test-2"]["status"] == 404
    # Lines written outside any request say so.
    assert any(entry["request_id"] == "-" for entry in lines)


def test_text_logs_carry_the_request_id_sent_through_nginx(nginx_url, stack):
    assert httpx.get(f"{nginx_url}/healthz", headers={"X-Request-ID": "text-log-test-1"}, timeout=10).status_code == 200
    log = stack.config.run_dir / "logs" / "gateway.log"
    deadline = time.monotonic() + 5
    while "[text-log-test-1]" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    (line,) = [line for line in log.read_text().splitlines() if "[text-log-test-1]" in line]
    assert "GET /healthz" in line
