"""Images in conversations: stored once by content, sent back to the model with
the history, served only to their owner, removed with the last conversation
that holds them. A gateway in front of a chat service with a tiny vision
model (the embedded SmolLM2 is text-only and refuses images)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.support.services import gateway_service, grpc_service


def picture(colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (64, 48))
    image.putdata([(colour[0], (x * 4) % 256, (y * 5) % 256) for y in range(48) for x in range(64)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vision_gateway(tmp_path_factory, tiny_vision_model, stack):
    root = tmp_path_factory.mktemp("vision-gateway")
    chat_env = {"CHAT_MODEL": str(tiny_vision_model("idefics3")), "ADAPTERS_DIR": str(root / "no-adapters"),
                "CHAT_MAX_TOKENS": "3"}
    with grpc_service("chat", root, chat_env) as (_, chat_addr):
        gateway_env = {"CHAT_ADDR": chat_addr, "ASR_ADDR": f"127.0.0.1:{stack.config.asr_port}",
                       "GATEWAY_AUTH": "off", "GATEWAY_DATA_DIR": str(root / "data")}
        with gateway_service(root, gateway_env) as (_, url), httpx.Client(base_url=url, timeout=120) as client:
            yield client, root / "data" / "images"


def ask(client: httpx.Client, conversation_id: str, text: str, image: bytes | None = None) -> dict:
    files = {"image": ("photo.png", image, "image/png")} if image else None
    response = client.post("/api/chat", data={"message": text, "conversation_id": conversation_id}, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def stored_files(images_dir) -> list:
    return [p for p in images_dir.rglob("*") if p.is_file()] if images_dir.exists() else []


def test_the_same_image_twice_is_one_file_referenced_by_both_messages(vision_gateway):
    client, images_dir = vision_gateway
    conversation = client.post("/api/conversations", json={}).json()["id"]
    red = picture((220, 0, 0))
    before = len(stored_files(images_dir))
    first = ask(client, conversation, "¿Qué ves?", red)
    second = ask(client, conversation, "¿Y ahora?", red)
    # The first image goes back to the model with the history: the second prompt holds two images.
    assert second["usage"]["prompt_tokens"] > 2 * first["usage"]["prompt_tokens"] - 20

    messages = client.get(f"/api/conversations/{conversation}").json()["messages"]
    user_images = [m["images"] for m in messages if m["role"] == "user"]
    assert len(user_images) == 2 and user_images[0] == user_images[1] and len(user_images[0]) == 1
    assert len(stored_files(images_dir)) == before + 1

    served = client.get(user_images[0][0]["url"])
    assert served.status_code == 200 and served.content == red
    assert served.headers["content-type"] == "image/png"
    assert "immutable" in served.headers["cache-control"]


def test_deleting_the_last_conversation_with_an_image_removes_its_file(vision_gateway):
    client, images_dir = vision_gateway
    blue = picture((0, 0, 230))
    keep = client.post("/api/conversations", json={}).json()["id"]
    drop = client.post("/api/conversations", json={}).json()["id"]
    ask(client, keep, "uno", blue)
    ask(client, drop, "dos", blue)
    url = client.get(f"/api/conversations/{drop}").json()["messages"][0]["images"][0]["url"]
    files = len(stored_files(images_dir))

    assert client.delete(f"/api/conversations/{drop}").status_code == 204
    assert client.get(url).status_code == 200 and len(stored_files(images_dir)) == files  # still in `keep`
    assert client.delete(f"/api/conversations/{keep}").status_code == 204
    assert client.get(url).status_code == 404 and len(stored_files(images_dir)) == files - 1


def test_an_image_url_that_is_not_a_digest_is_404(vision_gateway):
    client, _ = vision_gateway
    for name in ("not-a-digest", "..%2F..%2Fetc%2Fpasswd", "0" * 64):
        assert client.get(f"/api/images/{name}").status_code == 404


def test_the_openai_sdk_sends_an_image_as_a_data_url_and_gets_an_answer(vision_gateway):
    import base64

    from openai import OpenAI

    client, _ = vision_gateway
    sdk = OpenAI(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="single-user-mode", max_retries=0,
                 timeout=120)
    data_url = "data:image/png;base64," + base64.b64encode(picture((10, 180, 10))).decode()
    answer = sdk.chat.completions.create(model=sdk.models.list().data[0].id, max_tokens=3, messages=[
        {"role": "user", "content": [{"type": "text", "text": "¿Qué color ves?"},
                                     {"type": "image_url", "image_url": {"url": data_url}}]}])
    assert answer.choices[0].message.role == "assistant"
    # Image tokens make the prompt far longer than the question alone.
    alone = sdk.chat.completions.create(model=answer.model, max_tokens=3,
                                        messages=[{"role": "user", "content": "¿Qué color ves?"}])
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens + 30
