"""gRPC deadlines per call type: a gateway with very short CHAT_TIMEOUT_S and
TRANSCRIBE_TIMEOUT_S in front of the stack's services answers 504, and a
stream that outlives its deadline ends with an error event."""

from __future__ import annotations

import httpx
import pytest

from tests.support.audio_clips import speech
from tests.support.services import gateway_service
from tests.support.sse import read_events


@pytest.fixture(scope="module")
def impatient_gateway(tmp_path_factory, chat_addr, asr_addr):
    env = {"CHAT_ADDR": chat_addr, "ASR_ADDR": asr_addr, "CHAT_TIMEOUT_S": "0.4", "TRANSCRIBE_TIMEOUT_S": "0.05"}
    with gateway_service(tmp_path_factory.mktemp("impatient"), env) as (_, url):
        yield url


def test_a_chat_slower_than_its_deadline_is_504(impatient_gateway):
    response = httpx.post(impatient_gateway + "/api/chat", data={"message": "Escribe un cuento largo."}, timeout=60)
    assert response.status_code == 504
    assert response.json() == {"error": "the chat service did not answer in time", "error_type": "timeout"}


def test_a_transcription_slower_than_its_deadline_is_504(impatient_gateway):
    clip = speech("Hola, quiero saber el tiempo de mañana.", "webm")
    response = httpx.post(impatient_gateway + "/api/transcribe", files={"audio": ("a.webm", clip, "audio/webm")},
                          timeout=60)
    assert response.status_code == 504 and response.json()["error_type"] == "timeout"


def test_a_stream_past_its_deadline_ends_with_an_error_event(impatient_gateway):
    with httpx.stream("POST", impatient_gateway + "/api/chat/stream", data={"message": "Escribe un cuento largo."},
                      timeout=60) as response:
        timeout = {"error": "the chat service did not answer in time", "error_type": "timeout"}
        if response.status_code == 504:  # the first token itself came too late: refused before the stream
            assert httpx.Response(504, content=response.read()).json() == timeout
        else:
            events = list(read_events(response))
            assert events[0][0] == "meta" and events[-1] == ("error", timeout)
