"""The chat service with CHAT_BACKEND=openai, against a real OpenAI-compatible
server: the stack's own gateway `/v1`, which answers with the embedded SmolLM2
model. Everything goes over real sockets: gRPC in, HTTP + SSE out.

No llama.cpp or vLLM server installs here (llama-cpp-python is an sdist that
compiles for many minutes on 2 cores), so the gateway is the server; a second
gateway of our own, with sign-in on, covers API keys and a server that dies.
"""

from __future__ import annotations

import io
import os
import subprocess

import grpc
import httpx
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from scripts.stack import REPO, StackConfig, free_port
from tests.chat.helpers import chat, rpc_error, user, wait_for
from tests.support.grpc_health import health_status
from tests.support.services import gateway_service, grpc_service, start_service

MODEL = "smollm2-135m-instruct"
GREEDY = {"temperature": 0.0, "seed": 1}


def openai_env(base_url: str, **extra: str) -> dict[str, str]:
    return {"CHAT_BACKEND": "openai", "OPENAI_BASE_URL": base_url, "CHAT_MODEL": MODEL, **extra}


@pytest.fixture(scope="module")
def stub(gateway_url, tmp_path_factory):
    env = openai_env(f"{gateway_url}/v1")
    with grpc_service("chat", tmp_path_factory.mktemp("openai-chat"), env, timeout=60) as (_, address):
        with grpc.insecure_channel(address) as channel:
            yield chat_pb2_grpc.ChatServiceStub(channel)


def counter(gateway_url: str, name: str, **labels: str) -> float:
    """The sum of the gateway's samples of `name` that carry `labels` (and any others)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def exit_log(tmp_path, env: dict[str, str]) -> str:
    """Starts a chat service that is expected to give up at start; returns its log."""
    service = start_service("chat", tmp_path, {**env, "CHAT_PORT": "0"})
    try:
        assert service.process.wait(timeout=30) != 0
    finally:
        service.stop()
    return service.log_path.read_text()


# --- answers ---------------------------------------------------------------

QUESTION = user("Escribe una historia muy larga sobre un dragón.")


@pytest.fixture(scope="module")
def greedy_answer(stub) -> list[chat_pb2.ChatResponse]:
    """One greedy answer cut at 10 tokens: the reference the other answers are compared with."""
    request = chat_pb2.ChatRequest(messages=[QUESTION], options=chat_pb2.GenerationOptions(max_tokens=10, **GREEDY))
    return list(stub.Chat(request, timeout=60))


def test_streams_the_answer_in_pieces_and_ends_with_usage_and_timings(greedy_answer):
    deltas = [r.delta for r in greedy_answer if r.delta]
    final = greedy_answer[-1].final
    assert len(deltas) >= 2 and greedy_answer[-1].HasField("final")
    assert all(r.model == MODEL for r in greedy_answer)
    assert final.prompt_tokens > 0 and final.completion_tokens == 10
    assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert 0 < final.time_to_first_token_seconds <= final.total_seconds
    assert final.tokens_per_second > 0


def test_max_tokens_and_stop_strings_reach_the_server(stub, greedy_answer):
    whole = "".join(r.delta for r in greedy_answer)
    short, short_final = chat(stub, QUESTION, max_tokens=4, **GREEDY)
    assert short_final.completion_tokens == 4 and short_final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert whole.startswith(short) and len(short) < len(whole)

    # A stop string from the middle of the greedy answer cuts it there.
    middle = len(whole) // 2
    stop = whole[middle:middle + 3]
    assert stop.strip(), whole
    cut, cut_final = chat(stub, QUESTION, max_tokens=10, stop=[stop], **GREEDY)
    assert cut == whole[:whole.find(stop)]
    assert cut_final.finish_reason == chat_pb2.FINISH_REASON_STOP and cut_final.completion_tokens < 10


def test_list_models_reports_the_servers_model_text_only_with_its_context_length(stub, gateway_url):
    listed = httpx.get(f"{gateway_url}/v1/models", timeout=10).json()["data"]
    context = next(entry["context_length"] for entry in listed if entry["id"] == MODEL)
    (model,) = stub.ListModels(chat_pb2.ListModelsRequest(), timeout=10).models
    assert (model.name, model.backend, model.vision, model.max_images_per_message) == (MODEL, "openai", False, 0)
    assert model.context_length == context > 0


def test_an_image_to_a_text_only_configuration_is_refused_before_sending(stub, gateway_url):
    route = {"method": "POST", "route": "/v1/chat/completions"}  # any status: a 400 would count too
    before = counter(gateway_url, "gateway_http_requests_total", **route)
    error = rpc_error(lambda: chat(stub, user("¿Qué color?", png())))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "OPENAI_VISION" in error.details()
    assert counter(gateway_url, "gateway_http_requests_total", **route) == before


@pytest.fixture(scope="module")
def vision_stub(gateway_url, tmp_path_factory):
    """The same server, declared as reading images (it does not: SmolLM2 is
    text-only, which the gateway says once it has decoded the image)."""
    env = openai_env(f"{gateway_url}/v1", OPENAI_VISION="true", OPENAI_MAX_IMAGES="1")
    with grpc_service("chat", tmp_path_factory.mktemp("openai-vision"), env, timeout=60) as (_, address):
        with grpc.insecure_channel(address) as channel:
            yield chat_pb2_grpc.ChatServiceStub(channel)


def test_images_go_as_data_urls_and_the_servers_400_is_invalid_argument(vision_stub):
    error = rpc_error(lambda: chat(vision_stub, user("¿Qué color?", png())))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # "text-only" is the verdict on a decoded image: a malformed data URL would
    # have been refused by the gateway with another message.
    assert "refused the request" in error.details() and "text-only" in error.details()


def test_more_images_than_openai_max_images_are_refused_before_sending(vision_stub, gateway_url):
    route = {"method": "POST", "route": "/v1/chat/completions"}
    before = counter(gateway_url, "gateway_http_requests_total", **route)
    error = rpc_error(lambda: chat(vision_stub, user("Compara.", png()), user("¿Y esta?", png((0, 0, 200)))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1 per request (OPENAI_MAX_IMAGES)" in error.details()
    assert counter(gateway_url, "gateway_http_requests_total", **route) == before
    (model,) = vision_stub.ListModels(chat_pb2.ListModelsRequest(), timeout=10).models
    assert (model.vision, model.max_images_per_message) == (True, 1)


def test_another_model_name_is_not_found_without_asking_the_server(stub):
    error = rpc_error(lambda: chat(stub, user("hola"), model="llama-70b"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "llama-70b" in error.details() and MODEL in error.details()


def test_cancelling_the_grpc_call_closes_the_upstream_stream(stub, gateway_url):
    cancelled = {"method": "ChatService/Chat", "code": "CANCELLED"}
    before = counter(gateway_url, "gateway_backend_errors_total", **cancelled)
    request = chat_pb2.ChatRequest(messages=[user("Escribe una historia muy larga sobre un dragón.")],
                                   options=chat_pb2.GenerationOptions(max_tokens=300, **GREEDY))
    call = stub.Chat(request, timeout=60)
    pieces = 0
    for reply in call:
        pieces += bool(reply.delta)
        if pieces == 3:
            break
    call.cancel()
    # The gateway counts its own gRPC call to the model as CANCELLED only when
    # its HTTP client (our backend) went away mid-stream.
    wait_for(lambda: counter(gateway_url, "gateway_backend_errors_total", **cancelled) == before + 1, 15,
             "the gateway to see its client leave")


# --- start-up ----------------------------------------------------------------

def test_a_model_the_server_does_not_serve_stops_the_service_naming_the_ones_it_does(gateway_url, tmp_path):
    log = exit_log(tmp_path, {**openai_env(f"{gateway_url}/v1"), "CHAT_MODEL": "no-such-model"})
    assert "CHAT_MODEL='no-such-model'" in log and f"'{MODEL}'" in log


def test_without_chat_model_the_servers_first_listed_model_is_served(gateway_url, tmp_path):
    first = httpx.get(f"{gateway_url}/v1/models", timeout=10).json()["data"][0]["id"]
    env = {**openai_env(f"{gateway_url}/v1"), "CHAT_MODEL": ""}
    with grpc_service("chat", tmp_path, env, timeout=60) as (_, address), grpc.insecure_channel(address) as channel:
        (model,) = chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest(), timeout=10).models
    assert model.name == first == MODEL


def test_an_unreachable_server_keeps_the_service_not_serving_and_calls_unavailable(tmp_path):
    port = free_port()
    service = start_service("chat", tmp_path, {**openai_env(f"http://127.0.0.1:{free_port()}/v1"),
                                               "CHAT_PORT": str(port)})
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: health_status(address) in ("SERVING", "NOT_SERVING"), 30, "the service to listen")
        assert health_status(address) == "NOT_SERVING"
        with grpc.insecure_channel(address) as channel:
            error = rpc_error(lambda: chat(chat_pb2_grpc.ChatServiceStub(channel), user("hola"), timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "waiting for the OpenAI-compatible server" in error.details()
        assert service.running()
    finally:
        service.stop()


# --- a server of our own: API keys, and one that dies --------------------------

@pytest.fixture(scope="module")
def signed_in_gateway(chat_addr, tmp_path_factory):
    """A second gateway with sign-in on, in front of the stack's chat service;
    yields (its URL, an API key for it)."""
    log_dir = tmp_path_factory.mktemp("openai-gateway")
    with gateway_service(log_dir, {"GATEWAY_AUTH": "on", "CHAT_ADDR": chat_addr}) as (_, url):
        env = {**os.environ, **StackConfig(data_dir=log_dir / "data", auth="on").service_env()}
        made = subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-m", "gateway.admin",
                               "create-user", "openai-backend"], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        key = next(line.split(":", 1)[1].strip() for line in made.stdout.splitlines() if line.startswith("api key"))
        yield url, key


def test_a_server_that_refuses_the_credentials_stops_the_service_naming_openai_api_key(signed_in_gateway, tmp_path):
    url, _ = signed_in_gateway
    log = exit_log(tmp_path, openai_env(f"{url}/v1", OPENAI_API_KEY="sk-wrong-key"))
    assert "HTTP 401" in log and "check OPENAI_API_KEY" in log
    assert "sk-wrong-key" not in log


def test_the_api_key_is_sent_as_a_bearer_token(signed_in_gateway, tmp_path):
    url, key = signed_in_gateway
    with grpc_service("chat", tmp_path, openai_env(f"{url}/v1", OPENAI_API_KEY=key), timeout=60) as (service, address):
        with grpc.insecure_channel(address) as channel:
            text, final = chat(chat_pb2_grpc.ChatServiceStub(channel), user("Di hola."), max_tokens=3, timeout=60)
    assert text and final.completion_tokens == 3
    assert key not in service.log_path.read_text()


def test_a_server_that_dies_mid_answer_ends_the_stream_with_unavailable(chat_addr, tmp_path):
    """Two hops, so that both ways a stream can fail are real: `near` sees its
    server's connection drop; `far` gets the error as a `data: {"error": ...}`
    event, written by the gateway in front of `near` after the stream began.

        far (openai) → gateway 2 → near (openai) → gateway 1 (killed) → stack's chat
    """
    with gateway_service(tmp_path / "gateway-1", {"CHAT_ADDR": chat_addr}) as (doomed, doomed_url), \
            grpc_service("chat", tmp_path / "near", openai_env(f"{doomed_url}/v1"), timeout=60) as (_, near), \
            gateway_service(tmp_path / "gateway-2", {"CHAT_ADDR": near}) as (_, front_url), \
            grpc_service("chat", tmp_path / "far", openai_env(f"{front_url}/v1"), timeout=60) as (_, far), \
            grpc.insecure_channel(far) as channel:
        request = chat_pb2.ChatRequest(messages=[user("Escribe una historia larga.")],
                                       options=chat_pb2.GenerationOptions(max_tokens=300))
        received = []
        with pytest.raises(grpc.RpcError) as caught:
            for reply in chat_pb2_grpc.ChatServiceStub(channel).Chat(request, timeout=60):
                received.append(reply)
                if len(received) == 2:
                    doomed.process.kill()  # the server vanishes mid-answer, no goodbye
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "failed while answering" in caught.value.details()  # far: the error event
        assert "lost the connection" in caught.value.details()  # near: the dropped connection, passed on
        assert len(received) >= 2 and not any(r.HasField("final") for r in received)

        # Down for good: near cannot connect at all now. Waiting for the exit
        # first: SIGKILL is asynchronous, and until the dying gateway's
        # listening socket is closed the kernel can still accept a connection
        # and then reset it ("lost the connection", seen once in CI).
        doomed.process.wait(timeout=30)
        with grpc.insecure_channel(near) as near_channel:
            error = rpc_error(lambda: chat(chat_pb2_grpc.ChatServiceStub(near_channel), user("hola"), timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot reach" in error.details()
