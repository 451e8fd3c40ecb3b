"""The transformers backend with vision-language models, over real gRPC.

Two tiny checkpoints are built from real configurations by
tests/support/tiny_models.py (no vision weights can be fetched here): Idefics3
(SmolVLM-256M's configuration, the real SmolLM2 tokenizer and text weights)
and Mllama (Llama 3.2 Vision's structure and image processor). Each runs the
real processor, chat template, image preprocessing and generation; only what
the random vision weights make the model say is meaningless.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc
from PIL import Image

from tests.chat.helpers import chat, rpc_error, user
from tests.support.services import grpc_service

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # "the picture is stored turned left": viewers rotate it 90° clockwise


def picture(width: int, height: int, fmt: str = "PNG", orientation: int | None = None, mode: str = "RGB") -> bytes:
    """A real encoded picture with a gradient (not a flat colour)."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    if orientation is None:
        image.save(buffer, format=fmt)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        image.save(buffer, format=fmt, exif=exif.tobytes())
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 30), color) for color in (10, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


class TinyService(NamedTuple):
    stub: chat_pb2_grpc.ChatServiceStub
    name: str  # the model's name (its folder)
    log: Path


def serve_tiny(family: str, tmp_path_factory, tiny_vision_model, **env: str):
    """Serves the session's tiny model of the family."""
    root = tmp_path_factory.mktemp(family)
    model = tiny_vision_model(family)
    env = {"CHAT_MODEL": str(model), "ADAPTERS_DIR": str(root / "no-adapters"), "CHAT_MAX_TOKENS": "4", **env}
    with grpc_service("chat", root, env) as (service, address), grpc.insecure_channel(address) as channel:
        yield TinyService(chat_pb2_grpc.ChatServiceStub(channel), str(model), service.log_path)


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory, tiny_vision_model):
    yield from serve_tiny("idefics3", tmp_path_factory, tiny_vision_model)


@pytest.fixture(scope="module")
def mllama(tmp_path_factory, tiny_vision_model):
    # Warmed up at start as on a GPU (CHAT_WARMUP=auto does so on CUDA only).
    yield from serve_tiny("mllama", tmp_path_factory, tiny_vision_model, CHAT_WARMUP="on")


# --- Idefics3 (SmolVLM family) ---------------------------------------------

def test_idefics3_is_listed_as_vision_with_several_images_per_message(idefics3):
    stub, name = idefics3.stub, idefics3.name
    (model,) = stub.ListModels(chat_pb2.ListModelsRequest()).models
    assert (model.name, model.backend, model.vision, model.max_images_per_message) == (name, "transformers", True, 4)
    assert model.context_length == 8192


def test_idefics3_answers_a_png_through_its_processor_and_template(idefics3):
    stub = idefics3.stub
    text, final = chat(stub, user("Describe it.", picture(128, 64)), max_tokens=3, temperature=0)
    assert final.completion_tokens >= 1 and text.strip()
    # A 2:1 picture becomes 4 x 2 tiles of 512 px plus a global view, 64 image
    # tokens each: the processor expanded <image>, so the prompt holds them all.
    assert final.prompt_tokens > 9 * 64


def test_exif_orientation_is_applied_before_the_model_sees_the_image(idefics3):
    """SmolVLM splits an image into a grid of tiles, one line of tokens per row:
    a landscape picture (4 x 2 tiles) and a portrait one (2 x 4) give prompts of
    different lengths. A photo stored landscape with an EXIF tag saying "turn
    it upright" must be read as the portrait it is."""
    stub = idefics3.stub

    def prompt_tokens(data: bytes) -> int:
        return chat(stub, user("Describe it.", data), max_tokens=1, temperature=0)[1].prompt_tokens

    stored_sideways = prompt_tokens(picture(128, 64, "JPEG", orientation=ROTATE_90_CW))
    portrait = prompt_tokens(picture(64, 128, "JPEG"))
    landscape = prompt_tokens(picture(128, 64, "JPEG"))
    assert portrait != landscape, "the tile grid no longer depends on orientation; this test cannot tell"
    assert stored_sideways == portrait


# --- Mllama (Llama 3.2 Vision family) ----------------------------------------

def test_mllama_is_listed_as_vision_with_one_image_per_message(mllama):
    stub, name = mllama.stub, mllama.name
    (model,) = stub.ListModels(chat_pb2.ListModelsRequest()).models
    assert (model.name, model.vision, model.max_images_per_message) == (name, True, 1)
    assert model.context_length == 131072


def test_mllama_answers_a_jpeg(mllama):
    stub = mllama.stub
    text, final = chat(stub, user("¿Qué ves?", picture(200, 150, "JPEG")), max_tokens=4, temperature=0)
    assert final.completion_tokens >= 1 and text.strip()
    assert final.prompt_tokens < 40, "mllama reads images through cross-attention: one <|image|> token"


def test_mllama_refuses_a_second_image_in_one_message_before_any_work(mllama):
    stub = mllama.stub
    request = chat_pb2.ChatRequest(messages=[user("Compare", picture(64, 64), picture(64, 64, "JPEG"))])
    error = rpc_error(lambda: list(stub.Chat(request, timeout=30)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0] has 2 images" in error.details() and "at most 1" in error.details()


def test_images_on_several_user_turns_reach_the_model(mllama):
    stub = mllama.stub
    first = user("Mira esta foto.", picture(120, 90, "JPEG"))
    answer = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text="Es un degradado.")
    second = user("¿Y esta otra?", picture(90, 120))
    _, final = chat(stub, first, answer, second, max_tokens=2, temperature=0)
    assert final.completion_tokens >= 1


@pytest.mark.parametrize("data", [animated_gif(), picture(64, 48, "PNG", mode="RGBA"), picture(64, 48, "BMP")],
                         ids=["animated-gif", "transparent-png", "bmp"])
def test_other_image_formats_are_converted_for_the_model(mllama, data):
    stub = mllama.stub
    _, final = chat(stub, user("¿Qué es?", data), max_tokens=1, temperature=0)
    assert final.completion_tokens == 1


def test_a_vision_model_also_answers_text_only_turns(mllama):
    stub = mllama.stub
    _, final = chat(stub, user("Hola"), max_tokens=2, temperature=0)
    assert final.completion_tokens >= 1


def test_warm_up_runs_the_image_path_once_before_the_service_is_serving(mllama):
    # The fixture waited for SERVING: the warm-up line must already be there, after the load.
    lines = mllama.log.read_text(errors="replace").splitlines()
    loaded = next(i for i, line in enumerate(lines) if f"loaded {mllama.name}" in line)
    warmed = [i for i, line in enumerate(lines) if "warmed up (one image + text generation)" in line]
    assert len(warmed) == 1 and warmed[0] > loaded, lines[-10:]
