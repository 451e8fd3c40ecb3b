"""The chat service with its embedded default (SmolLM2-135M-Instruct through
transformers), over real gRPC: streaming, health, reflection, refusals."""

from __future__ import annotations

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.grpc_health import health_status


@pytest.fixture(scope="module")
def chat_stub(chat_addr):
    with grpc.insecure_channel(chat_addr) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


def ask(text: str, **options) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=text)],
                                options=chat_pb2.GenerationOptions(**options))


def test_health_is_serving_for_the_server_and_the_chat_service(chat_addr):
    assert health_status(chat_addr) == "SERVING"
    assert health_status(chat_addr, "chatbot.chat.v1.ChatService") == "SERVING"


def test_reflection_lists_the_chat_service(chat_addr):
    with grpc.insecure_channel(chat_addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in reply.list_services_response.service}
    assert {"chatbot.chat.v1.ChatService", "grpc.health.v1.Health"} <= names


def test_answer_streams_in_several_deltas_and_ends_with_token_counts(chat_stub):
    replies = list(chat_stub.Chat(ask("Escribe una frase sobre el mar.", max_tokens=16, temperature=0), timeout=120))
    deltas = [r.delta for r in replies if r.delta]
    final = replies[-1].final
    assert len(deltas) >= 2, "the answer arrived in one piece instead of streaming"
    assert "".join(deltas).strip()
    assert final.completion_tokens >= 2 and final.prompt_tokens > 5
    assert final.finish_reason in (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH)
    assert 0 < final.time_to_first_token_seconds <= final.total_seconds


def test_max_tokens_bounds_the_answer_and_reports_length(chat_stub):
    replies = list(chat_stub.Chat(ask("Cuenta del uno al cien, separados por comas.", max_tokens=5, temperature=0),
                                  timeout=120))
    final = replies[-1].final
    assert final.completion_tokens == 5
    assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH


def test_same_seed_gives_the_same_sampled_answer(chat_stub):
    def sample() -> str:
        request = ask("Di un color.", max_tokens=6, temperature=1.0, seed=1234)
        return "".join(r.delta for r in chat_stub.Chat(request, timeout=120))

    assert sample() == sample()


def test_multi_turn_history_reaches_the_model(chat_stub):
    history = [chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, text="Responde siempre en una palabra."),
               chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hola"),
               chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text="Hola."),
               chat_pb2.Message(role=chat_pb2.ROLE_USER, text="¿Cómo estás?")]
    short = list(chat_stub.Chat(chat_pb2.ChatRequest(messages=history[-1:],
                                                     options=chat_pb2.GenerationOptions(max_tokens=1)), timeout=120))
    full = list(chat_stub.Chat(chat_pb2.ChatRequest(messages=history,
                                                    options=chat_pb2.GenerationOptions(max_tokens=1)), timeout=120))
    assert full[-1].final.prompt_tokens > short[-1].final.prompt_tokens + 10


def test_an_image_for_the_text_only_model_names_the_model_and_the_setting(chat_stub, tiny_png):
    request = ask("¿Qué hay en la imagen?")
    request.messages[0].images.add(data=tiny_png, mime_type="image/png")
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "smollm2-135m-instruct" in caught.value.details() and "CHAT_BACKEND=ollama" in caught.value.details()


@pytest.mark.parametrize("request_, words", [
    (chat_pb2.ChatRequest(), "messages is empty"),
    (chat_pb2.ChatRequest(messages=[chat_pb2.Message(text="hola")]), "role is not set"),
    (chat_pb2.ChatRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="  ")]), "neither text nor images"),
    (ask("hola", temperature=5), "temperature must be between 0 and 2"),
])
def test_malformed_requests_are_invalid_argument_with_the_reason(chat_stub, request_, words):
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(request_, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()


@pytest.mark.parametrize("data, words", [
    (b"", "is empty"),
    (b"this is plain text, not a picture", "not an image"),
])
def test_broken_images_are_refused_with_the_reason(chat_stub, data, words):
    request = ask("mira")
    request.messages[0].images.add(data=data)
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()


def test_truncated_png_is_refused_as_corrupt(chat_stub, tiny_png):
    request = ask("mira")
    request.messages[0].images.add(data=tiny_png[: len(tiny_png) // 2])
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated or corrupt" in caught.value.details()


def test_unknown_model_is_not_found(chat_stub):
    request = ask("hola")
    request.model = "no-such-model"
    with pytest.raises(grpc.RpcError) as caught:
        list(chat_stub.Chat(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_models_reports_the_text_only_embedded_model(chat_stub):
    # The base model comes first; adapters the trainer left in ADAPTERS_DIR may follow.
    model, *adapters = chat_stub.ListModels(chat_pb2.ListModelsRequest()).models
    assert (model.name, model.backend, model.vision, model.max_images_per_message) == (
        "smollm2-135m-instruct", "transformers", False, 0)
    assert model.context_length == 8192 and model.base_model == ""
    assert all(adapter.base_model == model.name for adapter in adapters)
