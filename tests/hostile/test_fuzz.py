"""Bounded fuzzing for CI: the HTTP API from its own OpenAPI schema
(schemathesis), and the audio and image decoders through the public API with
mutated real files (hypothesis). Nothing may answer 5xx.

Bounds (hypothesis runs derandomized and without its example database, so
every CI run tries the same cases): routes that run no model get FUZZ_EXAMPLES cases each; the five
that call a model get MODEL_ROUTE_EXAMPLES, so the whole module stays around a
minute on two cores and under the stack's per-user rate limit (60 calls/min).
"""

from __future__ import annotations

import random

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.support.audio_clips import encode, speak_wav, wav_to_samples
from tests.support.hostile import patterned_png

FUZZ_EXAMPLES = 20
MODEL_ROUTE_EXAMPLES = 3
DECODER_EXAMPLES = {"audio": 4, "image": 40}
MODEL_ROUTES = r"^/(api/chat|api/chat/stream|api/transcribe|v1/chat/completions|v1/audio/transcriptions)$"
# Schema conformance is checked on what the schema documents; undocumented 4xx
# statuses (the gateway answers 400 where FastAPI documents 422) are not failures.
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))


def fuzz_operations(gateway_url: str, model_routes: bool, examples: int) -> list[str]:
    """Runs `examples` generated cases against each operation of the schema
    (those that call a model, or the others); returns the operations run.

    Driven by hand rather than by schemathesis' pytest plugin: its lazy loader
    (`from_fixture`) sets `_nodeid` on pytest items, which pytest 9 no longer has.
    """
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    schema = schema.include(path_regex=MODEL_ROUTES) if model_routes else schema.exclude(path_regex=MODEL_ROUTES)
    done = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=examples, **FUZZ_SETTINGS)
        @given(case=operation.as_strategy())
        def check(case):
            if isinstance(case.body, dict):
                # A valid max_tokens of thousands would keep the CPU model generating for
                # minutes; the stack's own cap (CHAT_MAX_TOKENS=24) is what tests run with.
                for field in ("max_tokens", "max_completion_tokens"):
                    if isinstance(case.body.get(field), int) and 24 < case.body[field] < 2**32:
                        case.body[field] = 24
            case.call_and_validate(checks=CHECKS, timeout=120)

        check()
        done.append(f"{operation.method.upper()} {operation.path}")
    return done


def test_routes_without_a_model_never_answer_5xx_and_match_their_schema(gateway_url):
    done = fuzz_operations(gateway_url, model_routes=False, examples=FUZZ_EXAMPLES)
    assert "POST /api/conversations" in done and len(done) >= 15, done


def test_routes_that_call_a_model_never_answer_5xx_and_match_their_schema(gateway_url):
    done = fuzz_operations(gateway_url, model_routes=True, examples=MODEL_ROUTE_EXAMPLES)
    assert sorted(done) == ["POST /api/chat", "POST /api/chat/stream", "POST /api/transcribe",
                            "POST /v1/audio/transcriptions", "POST /v1/chat/completions"], done


# --- decoders ---------------------------------------------------------------------------------


def mutate(data: bytes, seed: int, kind: str) -> bytes:
    """A real file damaged the ways files get damaged: cut short, bytes flipped,
    a run of junk spliced in, or a block of it zeroed."""
    rng = random.Random(seed)
    buffer = bytearray(data)
    if kind == "truncate":
        return bytes(buffer[:rng.randrange(len(buffer))])
    if kind == "flip":
        for _ in range(rng.randint(1, 32)):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        return bytes(buffer)
    if kind == "splice":
        at = rng.randrange(len(buffer))
        return bytes(buffer[:at]) + rng.randbytes(rng.randint(1, 512)) + bytes(buffer[at:])
    at, size = rng.randrange(len(buffer)), rng.randint(1, 256)
    buffer[at:at + size] = bytes(len(buffer[at:at + size]))
    return bytes(buffer)


MUTATIONS = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(["truncate", "flip", "splice", "zero"]))


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """One short real recording, as WebM/Opus (what Chrome sends) and WAV."""
    samples, rate = wav_to_samples(speak_wav("Hola."))
    return {"webm": encode(samples, rate, "webm"), "wav": encode(samples, rate, "wav")}


@pytest.fixture(scope="module")
def client(gateway_url):
    with httpx.Client(base_url=gateway_url, timeout=120) as client:
        yield client


def refused_or_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"], response.text  # a message, not an empty refusal


@pytest.mark.parametrize("fmt", ["webm", "wav"])
def test_mutated_audio_is_transcribed_or_refused_never_a_5xx(fmt, clips, client):
    @settings(max_examples=DECODER_EXAMPLES["audio"] // 2, **FUZZ_SETTINGS)
    @given(MUTATIONS)
    def check(mutation):
        data = mutate(clips[fmt], *mutation)
        refused_or_answered(client.post("/api/transcribe", files={"audio": (f"a.{fmt}", data, f"audio/{fmt}")}))

    check()


def test_mutated_png_is_refused_with_a_message_never_a_5xx(client):
    """The stack's model reads no images, but the chat service decodes every image
    (Pillow, fully) before it looks at the model, so the decoder is what is fuzzed."""
    png = patterned_png()

    @settings(max_examples=DECODER_EXAMPLES["image"], **FUZZ_SETTINGS)
    @given(MUTATIONS)
    def check(mutation):
        response = client.post("/api/chat", data={"message": "¿Qué ves?"},
                               files={"image": ("a.png", mutate(png, *mutation), "image/png")})
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]

    check()
