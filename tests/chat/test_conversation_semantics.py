"""Conversation semantics of the transformers backend on the embedded SmolLM2:
the default system prompt, the generation speed in the final message, and a
cancelled stream freeing the only worker."""

from __future__ import annotations

import re
import time

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc

from tests.chat.helpers import chat, user, wait_for
from tests.support.services import grpc_service

DEFAULT_SYSTEM_PROMPT = ("Eres el asistente de una biblioteca municipal. Respondes siempre en español, "
                         "con amabilidad y en pocas frases, y nunca inventas títulos de libros.")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("conversation")
    env = {"CHAT_SYSTEM_PROMPT": DEFAULT_SYSTEM_PROMPT, "CHAT_WORKERS": "1", "CHAT_MAX_QUEUE": "2",
           "ADAPTERS_DIR": str(root / "no-adapters")}
    with grpc_service("chat", root, env) as (process, address), grpc.insecure_channel(address) as channel:
        yield process, chat_pb2_grpc.ChatServiceStub(channel)


@pytest.fixture(scope="module")
def stub(service):
    return service[1]


def system(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, text=text)


def test_default_system_prompt_opens_a_conversation_that_has_none(stub):
    def prompt_tokens(*messages) -> int:
        return chat(stub, *messages, max_tokens=1, temperature=0)[1].prompt_tokens

    without = prompt_tokens(user("Hola"))
    assert without == prompt_tokens(system(DEFAULT_SYSTEM_PROMPT), user("Hola"))
    # The caller's own system message replaces the default instead of adding to it.
    assert prompt_tokens(system("Sé breve."), user("Hola")) < without - 20


def test_final_message_reports_generation_speed(stub):
    request = chat_pb2.ChatRequest(messages=[user("Cuenta del uno al veinte.")],
                                   options=chat_pb2.GenerationOptions(max_tokens=12, temperature=0))
    final = list(stub.Chat(request, timeout=180))[-1].final
    speed = final.tokens_per_second
    assert final.completion_tokens >= 3
    # Timed per token after the first: at least the rate over the whole call,
    # which also counts reading the prompt.
    assert (final.completion_tokens - 1) / final.total_seconds <= speed < 10_000


def test_a_cancelled_stream_frees_the_only_worker_for_the_next_request(service):
    process, stub = service
    max_tokens = 400  # minutes of generation on these CPUs if nothing stopped it
    request = chat_pb2.ChatRequest(
        messages=[user("Cuenta del uno al mil, separando los números con comas.")],
        options=chat_pb2.GenerationOptions(max_tokens=max_tokens, temperature=0))
    stream = stub.Chat(request, timeout=300)
    received = [next(stream).delta for _ in range(3)]  # generation is under way
    assert all(received)
    cancelled_at = time.monotonic()
    stream.cancel()

    # One worker: this request can only start once the cancelled one has stopped.
    text, final = chat(stub, user("Di hola."), max_tokens=3, temperature=0, timeout=120)
    assert final.completion_tokens >= 1 and text
    waited = time.monotonic() - cancelled_at
    assert waited < 60, f"the next request took {waited:.0f} s: the cancelled generation kept the worker"

    pattern = re.compile(r"generation stopped after (\d+) tokens: the client cancelled")
    wait_for(lambda: pattern.search(process.log_path.read_text(errors="replace")), 10, "the cancellation log line")
    stopped_after = int(pattern.search(process.log_path.read_text(errors="replace")).group(1))
    assert 3 <= stopped_after < max_tokens // 4


def test_requests_beyond_the_queue_are_refused_while_the_worker_is_busy(stub):
    """CHAT_WORKERS=1, CHAT_MAX_QUEUE=2: one runs, two wait, the fourth is refused at once."""
    long_request = chat_pb2.ChatRequest(messages=[user("Cuenta del uno al cien.")],
                                        options=chat_pb2.GenerationOptions(max_tokens=60, temperature=0))
    streams = [stub.Chat(long_request, timeout=300) for _ in range(3)]
    try:
        next(streams[0])  # the first one is generating; the other two are queued behind it
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Chat(long_request, timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for stream in streams:
            stream.cancel()
    # Cancelling the queued calls gives their places back.
    time.sleep(1)
    assert chat(stub, user("Hola"), max_tokens=1, temperature=0)[1].completion_tokens == 1
