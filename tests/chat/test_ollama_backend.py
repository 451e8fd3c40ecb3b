"""The chat service with CHAT_BACKEND=ollama, against the Ollama stand-in
(tests/chat/ollama_standin.py: the suite's only stand-in), over real sockets."""

from __future__ import annotations

import base64
import io
import time

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc
from PIL import Image

from tests.chat.ollama_standin import EVAL_DURATION_NS, REPLY_PIECES, OllamaStandin, StandinState
from tests.support.grpc_health import health_status
from tests.support.services import grpc_service, start_service


def png_bytes(color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def user_message(text: str, *images: bytes) -> chat_pb2.ChatRequest:
    message = chat_pb2.Message(role=chat_pb2.ROLE_USER, text=text)
    for data in images:
        message.images.add(data=data, mime_type="image/png")
    return chat_pb2.ChatRequest(messages=[message], options=chat_pb2.GenerationOptions(
        temperature=0.1, max_tokens=50, seed=7, stop=["###"]))


def collect(stub, request) -> tuple[list[str], chat_pb2.ChatResponse]:
    replies = list(stub.Chat(request, timeout=30))
    return [r.delta for r in replies if r.delta], replies[-1]


@pytest.fixture(scope="module")
def standin():
    with OllamaStandin() as server:
        yield server


@pytest.fixture(scope="module")
def chat_stub(standin, tmp_path_factory):
    env = {"CHAT_BACKEND": "ollama", "OLLAMA_URL": standin.url, "CHAT_MODEL": "llama3.2-vision"}
    with grpc_service("chat", tmp_path_factory.mktemp("ollama-chat"), env, timeout=60) as (_, address):
        with grpc.insecure_channel(address) as channel:
            yield chat_pb2_grpc.ChatServiceStub(channel)


@pytest.fixture(autouse=True)
def reset_standin(standin):
    standin.state.mode = "ok"
    standin.state.loading_s = 0.0
    standin.state.abandoned.clear()
    standin.state.chat_requests.clear()


def test_streams_ollamas_chunks_in_order_and_ends_with_counts(chat_stub):
    deltas, last = collect(chat_stub, user_message("¿Qué ves?"))
    assert deltas == REPLY_PIECES
    assert last.final.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (last.final.prompt_tokens, last.final.completion_tokens) == (17, len(REPLY_PIECES))
    assert last.model == "llama3.2-vision"


def test_generation_speed_is_ollamas_own_eval_rate(chat_stub):
    speed = list(chat_stub.Chat(user_message("¿Qué ves?"), timeout=30))[-1].final.tokens_per_second
    assert speed == pytest.approx(len(REPLY_PIECES) / (EVAL_DURATION_NS / 1e9), abs=0.01)


def test_sends_images_as_raw_base64_and_maps_options(chat_stub, standin):
    image = png_bytes()
    collect(chat_stub, user_message("¿De qué color es?", image))
    sent = standin.state.chat_requests[-1]
    assert sent["stream"] is True and sent["model"] == "llama3.2-vision"
    assert sent["messages"][0]["images"] == [base64.b64encode(image).decode()]  # no data: prefix
    assert sent["options"] == {"temperature": pytest.approx(0.1), "num_predict": 50, "seed": 7, "stop": ["###"]}
    assert sent["keep_alive"]


def test_two_images_in_one_message_are_refused_for_mllama_before_sending(chat_stub, standin):
    with pytest.raises(grpc.RpcError) as caught:
        collect(chat_stub, user_message("compara", png_bytes(), png_bytes((0, 0, 255))))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1" in caught.value.details()
    assert standin.state.chat_requests == []


@pytest.mark.parametrize("mode, code, words", [
    ("missing", grpc.StatusCode.NOT_FOUND, "ollama pull"),
    ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"),
    ("bad_request", grpc.StatusCode.INVALID_ARGUMENT, "invalid image input"),
])
def test_http_errors_from_ollama_map_to_grpc_codes(chat_stub, standin, mode, code, words):
    standin.state.mode = mode
    with pytest.raises(grpc.RpcError) as caught:
        collect(chat_stub, user_message("hola"))
    assert caught.value.code() == code
    assert words in caught.value.details()


def pieces_until_failure(stub) -> tuple[list[str], grpc.RpcError]:
    """The text pieces a failing stream delivered, and the error that ended it."""
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stub.Chat(user_message("hola"), timeout=30):
            received.append(reply.delta)
    return received, caught.value


def test_an_error_line_midway_ends_the_stream_with_unavailable_after_the_text_so_far(chat_stub, standin):
    standin.state.mode = "midstream_error"
    received, error = pieces_until_failure(chat_stub)
    assert received == REPLY_PIECES[:2]
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "CUDA out of memory" in error.details()


def test_ollama_dying_mid_answer_ends_the_stream_with_unavailable_and_the_next_call_is_served(chat_stub, standin):
    standin.state.mode = "vanish_midway"
    received, error = pieces_until_failure(chat_stub)
    assert received == REPLY_PIECES[:2]
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Ollama stopped answering in the middle" in error.details()
    standin.state.mode = "ok"  # Ollama back (compose restarts it): served, no restart of this service
    pieces, last = collect(chat_stub, user_message("hola"))
    assert pieces == REPLY_PIECES and last.HasField("final")


def test_a_model_still_loading_is_bounded_by_the_callers_deadline_and_the_wait_is_abandoned(chat_stub, standin):
    standin.state.mode, standin.state.loading_s = "loading", 30
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(user_message("hola"), timeout=2))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    # The service hung up on Ollama instead of waiting on for an answer nobody reads.
    assert standin.state.abandoned.wait(10)
    # Loaded now: the same service answers.
    standin.state.mode = "ok"
    pieces, _ = collect(chat_stub, user_message("hola"))
    assert pieces == REPLY_PIECES


def test_list_models_reports_vision_and_one_image_per_message(chat_stub):
    (model,) = chat_stub.ListModels(chat_pb2.ListModelsRequest()).models
    assert (model.name, model.backend, model.vision, model.max_images_per_message) == ("llama3.2-vision", "ollama", True, 1)
    assert model.context_length == 131072


def test_a_missing_model_is_pulled_at_start(tmp_path):
    with OllamaStandin(StandinState(models={})) as server:
        env = {"CHAT_BACKEND": "ollama", "OLLAMA_URL": server.url, "CHAT_MODEL": "qwen2.5:0.5b"}
        with grpc_service("chat", tmp_path, env, timeout=60):
            assert server.state.pulled == ["qwen2.5:0.5b"]


def test_an_ollama_release_that_cannot_run_mllama_stops_the_service_with_the_reason(tmp_path):
    with OllamaStandin(StandinState(version="0.30.1")) as server:
        service = start_service("chat", tmp_path, {"CHAT_BACKEND": "ollama", "OLLAMA_URL": server.url,
                                                   "CHAT_MODEL": "llama3.2-vision", "CHAT_PORT": "0"})
        try:
            assert service.process.wait(timeout=60) != 0
        finally:
            service.stop()
    log = service.log_path.read_text()
    assert "Ollama 0.30.1 cannot run llama3.2-vision" in log and "0.24.0" in log


def test_unreachable_ollama_keeps_the_service_not_serving_and_calls_unavailable(tmp_path):
    from scripts.stack import free_port

    dead_url = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    service = start_service("chat", tmp_path, {"CHAT_BACKEND": "ollama", "OLLAMA_URL": dead_url,
                                               "CHAT_PORT": str(port)})
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_listener(address)
        assert health_status(address) == "NOT_SERVING"
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
            list(chat_pb2_grpc.ChatServiceStub(channel).Chat(user_message("hola"), timeout=30))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot reach Ollama" in caught.value.details()
        assert service.running()
    finally:
        service.stop()


def _wait_for_listener(address: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not health_status(address).startswith(("SERVING", "NOT_SERVING")):
        assert time.monotonic() < deadline, f"{address} never started listening"
        time.sleep(0.3)
