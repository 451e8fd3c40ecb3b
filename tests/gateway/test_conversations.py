"""Conversations through nginx: on the shared stack (SQLite, single-user mode)
and on the secured front (PostgreSQL, API key), the same behaviour."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.sse import read_events


@dataclass
class Front:
    url: str
    headers: dict
    data_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def front(request) -> Front:
    if request.param == "sqlite":
        stack = request.getfixturevalue("stack")
        return Front(stack.config.url, {}, stack.config.data_dir)
    secured = request.getfixturevalue("secured")
    _, key = secured.new_user(f"conversations-{id(request)}")
    return Front(secured.url, {"Authorization": f"Bearer {key}"}, secured.stack.config.data_dir)


@pytest.fixture
def api(front):
    with front.client() as client:
        yield client


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def new_conversation(api, **fields) -> dict:
    response = api.post("/api/conversations", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def stream_chat(api, conversation_id: str, message: str, **form) -> tuple[dict, str, list[str]]:
    """(meta event, answer text, event names) of one streamed chat in a conversation."""
    files = form.pop("files", None)
    with api.stream("POST", "/api/chat/stream", data={"message": message, "conversation_id": conversation_id,
                                                       **form}, files=files) as response:
        assert response.status_code == 200, response.read()
        events = list(read_events(response))
    meta = events[0][1]
    text = "".join(data["content"] for name, data in events if name == "delta")
    return meta, text, [name for name, _ in events]


def test_create_get_rename_and_delete(api):
    created = new_conversation(api, title="Recetas")
    assert created["title"] == "Recetas" and len(created["id"]) == 32
    fetched = api.get(f"/api/conversations/{created['id']}").json()
    assert fetched["messages"] == [] and fetched["title"] == "Recetas"

    renamed = api.patch(f"/api/conversations/{created['id']}", json={"title": "Cocina"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Cocina"
    assert api.get(f"/api/conversations/{created['id']}").json()["title"] == "Cocina"

    assert api.delete(f"/api/conversations/{created['id']}").status_code == 204
    gone = api.get(f"/api/conversations/{created['id']}")
    assert gone.status_code == 404 and gone.json()["error_type"] == "not_found"
    assert api.delete(f"/api/conversations/{created['id']}").status_code == 404


def test_list_is_newest_first_and_paginated(api):
    ids = [new_conversation(api, title=f"página {n}")["id"] for n in range(3)]
    first = api.get("/api/conversations", params={"limit": 2}).json()
    assert [c["id"] for c in first["conversations"]] == ids[::-1][:2]
    assert first["next_offset"] == 2
    second = api.get("/api/conversations", params={"limit": 2, "offset": first["next_offset"]}).json()
    assert second["conversations"][0]["id"] == ids[0]


@pytest.mark.parametrize("body, field", [({"title": ""}, "title"), ({"title": "x", "colour": "red"}, "colour")])
def test_bad_rename_bodies_are_400_naming_the_field(api, body, field):
    conversation = new_conversation(api)
    response = api.patch(f"/api/conversations/{conversation['id']}", json=body)
    assert response.status_code == 400 and field in response.json()["error"]


def test_a_chat_turn_is_stored_and_the_history_goes_to_the_model(api):
    conversation = new_conversation(api)
    meta, first_answer, names = stream_chat(api, conversation["id"], "Me llamo Ana. ¿Qué tal?")
    assert names[0] == "meta" and names[-1] == "done"
    assert meta["conversation_id"] == conversation["id"]

    stored = api.get(f"/api/conversations/{conversation['id']}").json()
    assert [(m["role"], m["status"]) for m in stored["messages"]] == [("user", "complete"), ("assistant", "complete")]
    assert stored["messages"][0]["content"] == "Me llamo Ana. ¿Qué tal?"
    assert stored["messages"][1]["content"] == first_answer and stored["messages"][1]["id"] == meta["message_id"]
    assert stored["messages"][1]["finish_reason"] in ("stop", "length")
    assert stored["title"].startswith("Me llamo Ana")  # the first message names an untitled conversation

    # The same question with and without the stored history: the history makes the prompt longer.
    alone = api.post("/api/chat", data={"message": "¿Cómo me llamo?"}).json()
    followed = api.post("/api/chat", data={"message": "¿Cómo me llamo?", "conversation_id": conversation["id"]})
    assert followed.status_code == 200, followed.text
    assert followed.json()["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"] + 10
    messages = api.get(f"/api/conversations/{conversation['id']}").json()["messages"]
    assert [m["id"] for m in messages[2:]] == [followed.json()["user_message_id"], followed.json()["message_id"]]

    # Regenerate / edit-and-resend: the second exchange is cut off, the first stays.
    other = new_conversation(api)
    assert api.delete(f"/api/conversations/{other['id']}/messages/{messages[2]['id']}").status_code == 404
    cut = api.delete(f"/api/conversations/{conversation['id']}/messages/{messages[2]['id']}")
    assert cut.status_code == 204
    kept = api.get(f"/api/conversations/{conversation['id']}").json()["messages"]
    assert [m["id"] for m in kept] == [messages[0]["id"], messages[1]["id"]]


def test_a_turn_the_model_refuses_stores_nothing(api):
    # The embedded model is text-only and refuses images (test_conversation_images.py has a vision model).
    conversation = new_conversation(api)
    image = png_bytes((200, 30, 30))
    refused = api.post("/api/chat", data={"message": "¿Qué ves?", "conversation_id": conversation["id"]},
                       files={"image": ("a.png", image, "image/png")})
    assert refused.status_code == 400
    assert api.get(f"/api/conversations/{conversation['id']}").json()["messages"] == []


def test_a_stream_cut_short_keeps_what_was_generated_marked_incomplete(api):
    conversation = new_conversation(api)
    with api.stream("POST", "/api/chat/stream", data={"message": "Cuéntame una historia larga sobre el mar.",
                                                       "conversation_id": conversation["id"]}) as response:
        received = ""
        for name, data in read_events(response):
            if name == "delta":
                received += data["content"]
                break  # the client leaves after the first piece of the answer
    answer = None
    for _ in range(100):  # the gateway stores the answer once it has seen the client leave
        answer = api.get(f"/api/conversations/{conversation['id']}").json()["messages"][-1]
        if answer["status"] != "streaming":
            break
        time.sleep(0.1)
    assert answer["status"] == "incomplete" and answer["finish_reason"] == "", answer
    assert answer["content"].startswith(received) and received


def test_an_unknown_conversation_is_404_and_no_model_work_is_done(api):
    response = api.post("/api/chat", data={"message": "hola", "conversation_id": "0" * 32})
    assert response.status_code == 404 and "conversation" in response.json()["error"]
