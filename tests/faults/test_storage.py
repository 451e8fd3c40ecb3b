"""The gateway's own storage failing: a full data volume answers 507 and the
gateway goes on (reads still work, writes work again once there is room, no
restart); a read-only one stops the start with one plain line.

Real filesystems: a small tmpfs mounted for the test (the suite runs as root,
as `make test` does to install its system packages and start PostgreSQL).
"""

from __future__ import annotations

import subprocess

import httpx

from scripts.stack import REPO
from tests.support.services import gateway_service
from tests.support.volumes import fill, small_volume

# Dead addresses: these tests never reach a model service.
NO_SERVICES = {"CHAT_ADDR": "127.0.0.1:9", "ASR_ADDR": "127.0.0.1:9"}


def test_a_full_data_volume_answers_507_and_the_same_gateway_stores_again_once_there_is_room(tmp_path):
    with small_volume(tmp_path / "data", "3m") as data, \
            gateway_service(tmp_path, {**NO_SERVICES, "GATEWAY_DATA_DIR": str(data)}) as (service, url), \
            httpx.Client(base_url=url, timeout=60) as client:
        kept = client.post("/api/conversations", json={"title": "antes"})
        assert kept.status_code == 201, kept.text
        filler = fill(data)

        # Enough new rows to need more pages than SQLite's log holds free.
        refused = [client.post("/api/conversations", json={"title": "x" * 150}) for _ in range(5)]
        assert {r.status_code for r in refused} == {507}, [r.text for r in refused]
        assert refused[0].json()["error_type"] == "storage_full"
        assert "storage is full" in refused[0].json()["error"] and "nothing was stored" in refused[0].json()["error"]
        # Reads go on, and the gateway is up and ready as far as its storage goes.
        assert client.get("/healthz").status_code == 200
        titles = [c["title"] for c in client.get("/api/conversations").json()["conversations"]]
        assert titles == ["antes"]

        filler.unlink()
        stored = client.post("/api/conversations", json={"title": "después"})
        assert stored.status_code == 201, stored.text
        titles = [c["title"] for c in client.get("/api/conversations").json()["conversations"]]
        assert titles == ["después", "antes"]  # nothing from the refused writes
        assert service.running()
        assert "Traceback" not in service.log_path.read_text(errors="replace")


def test_a_chat_into_a_conversation_on_a_full_volume_is_507_before_streaming_and_stores_nothing(tmp_path, stack):
    # The shared stack's chat service answers; this gateway's storage is full.
    services = {"CHAT_ADDR": f"127.0.0.1:{stack.config.chat_port}", "ASR_ADDR": f"127.0.0.1:{stack.config.asr_port}"}
    with small_volume(tmp_path / "data", "3m") as data, \
            gateway_service(tmp_path, {**services, "GATEWAY_DATA_DIR": str(data)}) as (service, url), \
            httpx.Client(base_url=url, timeout=120) as client:
        conversation = client.post("/api/conversations", json={"title": "charla"}).json()["id"]
        filler = fill(data)
        refused = client.post("/api/chat/stream", data={"message": "Hola, ¿qué tal?", "conversation_id": conversation})
        assert refused.status_code == 507, refused.text
        assert refused.json()["error_type"] == "storage_full"
        filler.unlink()
        # The user's message was not half-stored: the conversation is as it was, and it works again.
        assert client.get(f"/api/conversations/{conversation}").json()["messages"] == []
        answered = client.post("/api/chat", data={"message": "Hola", "conversation_id": conversation})
        assert answered.status_code == 200, answered.text
        roles = [m["role"] for m in client.get(f"/api/conversations/{conversation}").json()["messages"]]
        assert roles == ["user", "assistant"]


def test_a_read_only_data_volume_stops_the_start_with_one_plain_line(tmp_path):
    with small_volume(tmp_path / "data", "1m", "ro") as data:
        started = subprocess.run([str(REPO / ".venv/gateway/bin/python"), "-m", "gateway"],
                                 env={"PATH": "/usr/bin:/bin", **NO_SERVICES, "GATEWAY_DATA_DIR": str(data),
                                      "GATEWAY_AUTH": "off", "GATEWAY_PORT": "0"},
                                 capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert started.stderr.strip() == (f"gateway: GATEWAY_DATA_DIR {data} cannot be written (Read-only file "
                                       "system): the conversations database and stored images live there")

