"""The OpenAI-compatible /v1 API through nginx, driven by the official `openai`
SDK as existing tools drive it: chat (whole and streamed, options, images,
errors), speech to text in every response format, and the model list."""

from __future__ import annotations

import base64
import unicodedata

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.audio_clips import speech

CHAT_MODEL = "smollm2-135m-instruct"  # the stack's embedded default (CHAT_BACKEND=transformers)
SPEECH_MODEL = "whisper-base"  # ASR_MODEL=base
SPANISH_PROMPT = "Hola, quiero saber el tiempo de mañana en Madrid"


def plain(text: str) -> str:
    """Lowercase without accents, so assertions don't hinge on Whisper's spelling."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@pytest.fixture(scope="module")
def client(nginx_url) -> OpenAI:
    # No retries: a 429 or 5xx must fail the test, not be hidden by the SDK's backoff.
    with OpenAI(base_url=f"{nginx_url}/v1", api_key="no-auth-yet", timeout=180, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def spanish_webm() -> bytes:
    return speech(SPANISH_PROMPT, "webm")


def ask(client: OpenAI, text: str, **options):
    return client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": text}], **options)


# --- models -------------------------------------------------------------------

def test_models_list_has_the_embedded_chat_model_and_the_speech_model(client):
    models = {m.id: m for m in client.models.list()}
    assert CHAT_MODEL in models and SPEECH_MODEL in models, list(models)
    assert models[CHAT_MODEL].object == "model" and models[CHAT_MODEL].owned_by
    assert models[CHAT_MODEL].model_extra["task"] == "chat"
    assert models[CHAT_MODEL].model_extra["vision"] is False
    assert models[SPEECH_MODEL].model_extra["task"] == "transcription"
    # Asked of the ASR service itself (its ListModels), not guessed from a setting.
    speech = models[SPEECH_MODEL].model_extra
    assert (speech["engine"], speech["device"], speech["compute_type"], speech["loaded"]) == \
        ("faster-whisper", "cpu", "int8", True)


def test_retrieve_one_model_and_404_for_an_unknown_one(client):
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# --- chat ---------------------------------------------------------------------

def test_chat_completion_answers_with_the_assistant_message_and_usage(client):
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=[
        {"role": "system", "content": "Eres un asistente breve."},
        {"role": "user", "content": [{"type": "text", "text": "Hola, ¿cómo estás?"}]},
    ])
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == CHAT_MODEL
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_sends_chunks_as_generated_then_usage_when_asked(client):
    stream = client.chat.completions.create(
        model=CHAT_MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Escribe un poema corto sobre el sol."}])
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2 and "".join(texts).strip()
    # The last chunk carries the usage and no choice; the one before it the finish reason.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_include_usage_sends_no_usage(client):
    chunks = list(ask(client, "Di hola.", stream=True, max_tokens=4))
    assert chunks and all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_same_seed_gives_the_same_sampled_answer(client):
    prompt = "Inventa el nombre de un planeta y descríbelo."

    def sample(seed: int) -> str:
        return ask(client, prompt, temperature=1.3, seed=seed, max_tokens=16).choices[0].message.content

    first, again, other = sample(1234), sample(1234), sample(98765)
    assert first == again
    # Sampling really is random at this temperature: another seed answers differently.
    assert other != first


@pytest.mark.parametrize("as_list", [False, True], ids=["string", "list"])
def test_a_stop_string_ends_the_answer_just_before_it(client, as_list):
    prompt = "Describe una mañana en la playa."
    full = ask(client, prompt, temperature=0).choices[0].message.content
    words = [w for w in full.split() if len(w) >= 3 and w.isalpha()]
    assert len(words) >= 2, full
    stop = words[len(words) // 2]
    expected = full[:full.index(stop)]
    reply = ask(client, prompt, temperature=0, stop=[stop, "@@never@@"] if as_list else stop)
    assert reply.choices[0].message.content.rstrip() == expected.rstrip()
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("option", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_caps_the_answer(client, option):
    reply = ask(client, "Cuéntame una historia larga.", temperature=0, **{option: 3})
    assert reply.usage.completion_tokens <= 3
    assert reply.choices[0].finish_reason == "length"


def test_an_image_for_the_text_only_model_is_400_naming_the_backend_that_sees(client, tiny_png):
    url = "data:image/png;base64," + base64.b64encode(tiny_png).decode()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "¿Qué hay en la imagen?"},
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert "CHAT_BACKEND=ollama" in caught.value.message
    assert caught.value.type == "invalid_request_error"


def test_an_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hola"}])
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert CHAT_MODEL in caught.value.message  # says what is served instead


def test_an_unknown_model_is_404_before_a_stream_starts(client):
    with pytest.raises(openai.NotFoundError):
        list(client.chat.completions.create(model="gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": "hola"}]))


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "https://example.com/cat.png"])
def test_remote_image_urls_are_refused_not_fetched(client, url):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert caught.value.code == "unsupported_image_url"
    assert caught.value.param == "messages[0].content[1].image_url"
    assert "data URL" in caught.value.message


def test_v1_errors_have_openais_shape_while_api_keeps_its_own(nginx_url):
    with httpx.Client(base_url=nginx_url, timeout=30) as http:
        v1 = http.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": [], "temperature": 5})
        api = http.post("/api/chat", data={})
    assert v1.status_code == 400
    error = v1.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert api.status_code == 400 and set(api.json()) == {"error", "error_type"}


# --- speech to text -------------------------------------------------------------

def transcribe(client: OpenAI, clip: bytes, **options):
    return client.audio.transcriptions.create(model="whisper-1", file=("clip.webm", clip, "audio/webm"),
                                              language="es", **options)


def test_transcription_json_has_the_text(client, spanish_webm):
    result = transcribe(client, spanish_webm)
    assert "madrid" in plain(result.text) and "tiempo" in plain(result.text), result.text


def test_transcription_text_is_the_bare_transcript(client, spanish_webm):
    result = transcribe(client, spanish_webm, response_format="text")
    assert isinstance(result, str) and "madrid" in plain(result)
    assert not result.lstrip().startswith("{")


def test_transcription_verbose_json_has_language_duration_and_segments(client, spanish_webm):
    result = transcribe(client, spanish_webm, response_format="verbose_json", timestamp_granularities=["word"])
    assert result.language == "es" and result.duration > 1
    assert "madrid" in plain(result.text)
    assert result.segments and all(s.start < s.end for s in result.segments)
    assert result.segments[-1].end <= result.duration + 0.5
    assert any("madrid" in plain(w.word) for w in result.words), result.words


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_transcription_subtitles_have_timed_cues(client, spanish_webm, fmt):
    result = transcribe(client, spanish_webm, response_format=fmt)
    assert isinstance(result, str) and "madrid" in plain(result)
    lines = result.strip().splitlines()
    if fmt == "srt":
        assert lines[0] == "1" and lines[1].startswith("00:00:00,000 --> 00:00:0")
    else:
        assert lines[0] == "WEBVTT" and lines[2].startswith("00:00:00.000 --> 00:00:0")


def test_transcription_accepts_any_model_name(client, spanish_webm):
    result = client.audio.transcriptions.create(model=SPEECH_MODEL, file=("clip.webm", spanish_webm, "audio/webm"),
                                                language="es", prompt="Madrid", temperature=0)
    assert "madrid" in plain(result.text)


def test_transcription_of_an_image_is_refused_in_openais_shape(client, tiny_png):
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("photo.png", tiny_png, "image/png"))
    assert caught.value.status_code == 415 and caught.value.code == "unsupported_media_type"
