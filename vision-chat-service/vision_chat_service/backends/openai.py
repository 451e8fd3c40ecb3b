"""Backend that forwards chat to any OpenAI-compatible server (vLLM, TGI,
llama.cpp's server, LocalAI…): the way to serve from several GPUs or replicas.

Wire protocol (https://platform.openai.com/docs/api-reference/chat):
- `GET {base}/models` lists `{"data": [{"id": ...}, ...]}`; vLLM adds
  `max_model_len`, this project's own gateway `context_length`.
- `POST {base}/chat/completions` with `stream: true` answers Server-Sent Events,
  one `chat.completion.chunk` JSON per `data:` line, `choices[0].delta.content`
  carrying text, `choices[0].finish_reason` on the last choice chunk, a chunk
  with `usage` and no choices when `stream_options.include_usage` is set, then
  `data: [DONE]`.
- Errors are a JSON body with a non-200 status, or a `data:` line carrying
  `{"error": ...}` once the stream has started. Servers differ in the shape:
  OpenAI and llama.cpp `{"error": {"message", "type", "code"}}`, TGI
  `{"error": "text", "error_type"}`, older vLLM `{"object": "error", "message"}`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
from PIL import Image

from ..config import Settings
from ..domain import ChatFinal, ChatMessage, ChatRequest
from ..errors import BackendUnavailable, ChatError, InvalidRequest, ModelNotFound, QueueFull
from .base import ModelDescription, StreamEvent
from .sse import SSEEvent, sse_events

log = logging.getLogger(__name__)

# A server answering these at start is up but not ready (vLLM and TGI load the
# model behind a 503; a proxy in front says 502/504 until the upstream is up).
_NOT_READY_YET = {502, 503, 504}
# OpenAI's error `type` names, for errors that arrive inside the stream with no HTTP status.
_STATUS_BY_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                   "not_found_error": 404, "rate_limit_error": 429}


def _error_message(body: object) -> str:
    """The human part of an error body, whatever its shape (see the module's docstring)."""
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict):
        return str(inner.get("message") or inner.get("detail") or inner)
    return str(inner)


def _response_message(response: httpx.Response) -> str:
    try:
        return _error_message(response.json())
    except ValueError:
        return response.text[:500] or response.reason_phrase


def _error_for_status(status: int, message: str, model: str, base_url: str) -> ChatError:
    """Maps an HTTP error of the server to the service's own error (and so to a gRPC code)."""
    if status in (401, 403):
        # Retrying cannot help; UNAVAILABLE because the fault is the deployment's, not the caller's.
        return BackendUnavailable(f"the server at {base_url} refused the credentials (HTTP {status}: {message}); "
                                  "check OPENAI_API_KEY")
    if status == 404:
        return ModelNotFound(f"the server at {base_url} does not serve model {model!r} ({message})")
    if status in (429, 503):
        return QueueFull(f"the server at {base_url} is busy: {message}")
    if status in (400, 413, 422):  # 422: TGI's and FastAPI-based servers' validation errors
        return InvalidRequest(f"the server at {base_url} refused the request: {message}")
    return BackendUnavailable(f"the server at {base_url} failed with HTTP {status}: {message}")


def _mime_type(data: bytes) -> str:
    """The image's media type for its data URL. Only the header is read: the
    bytes were fully decoded once already (domain.request_from_pb)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.get_format_mimetype() or "image/png"


def _data_url(data: bytes) -> str:
    return f"data:{_mime_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _message_payload(message: ChatMessage) -> dict:
    if not message.images:
        # Plain string content: text-only servers (older TGI, some LocalAI
        # backends) do not accept the list-of-parts form.
        return {"role": message.role.value, "content": message.text}
    parts = [{"type": "text", "text": message.text}] if message.text else []
    parts += [{"type": "image_url", "image_url": {"url": _data_url(data)}} for data in message.images]
    return {"role": message.role.value, "content": parts}


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base_url = settings.openai_base_url
        self._model = settings.model_name  # "" = the first model the server lists (resolved at start)
        self._context_length = 0
        self._ready = False
        key = settings.openai_api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # No read timeout: a long answer may pause between tokens (a busy vLLM
        # batches many streams); the gateway's gRPC deadline bounds the whole call.
        self._client = httpx.AsyncClient(base_url=self._base_url, headers=headers,
                                         timeout=httpx.Timeout(10.0, read=None))

    # --- start ------------------------------------------------------------

    async def start(self) -> None:
        """Waits for the server, then checks that it serves the configured model."""
        listed = await self._wait_for_models()
        entry = self._pick(listed)
        self._model = entry["id"]
        self._context_length = int(entry.get("max_model_len") or entry.get("context_length") or 0)
        self._ready = True
        log.info("OpenAI-compatible server at %s serves %s (context %s, vision=%s as configured)",
                 self._base_url, self._model, self._context_length or "unknown", self._settings.openai_vision)

    async def _wait_for_models(self) -> list[dict]:
        """GET /models, retried while the server is down or still loading (the
        service stays NOT_SERVING meanwhile); refused credentials or a URL that
        is not an OpenAI API stop the start, since waiting cannot fix them."""
        delay = 0.5
        while True:
            try:
                response = await self._client.get("/models")
            except httpx.TransportError as error:
                log.warning("waiting for the OpenAI-compatible server at %s (%s)", self._base_url, error)
            else:
                if response.status_code not in _NOT_READY_YET:
                    return self._model_list(response)
                log.warning("the server at %s is not ready yet (HTTP %d)", self._base_url, response.status_code)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    def _model_list(self, response: httpx.Response) -> list[dict]:
        if response.status_code in (401, 403):
            raise _error_for_status(response.status_code, _response_message(response), self._model, self._base_url)
        if response.status_code != 200:
            raise BackendUnavailable(f"GET {self._base_url}/models answered HTTP {response.status_code} "
                                     f"({_response_message(response)}); OPENAI_BASE_URL must be the API root, "
                                     "usually ending in /v1")
        try:
            listed = [entry for entry in response.json()["data"] if isinstance(entry, dict) and entry.get("id")]
        except (ValueError, KeyError, TypeError):
            raise BackendUnavailable(f"GET {self._base_url}/models did not answer an OpenAI model list; "
                                     "is OPENAI_BASE_URL an OpenAI-compatible API root?") from None
        if not listed:
            raise ModelNotFound(f"the server at {self._base_url} lists no models")
        return listed

    def _pick(self, listed: list[dict]) -> dict:
        if not self._model:
            return listed[0]
        for entry in listed:
            if entry["id"] == self._model:
                return entry
        available = ", ".join(repr(entry["id"]) for entry in listed)
        raise ModelNotFound(f"the server at {self._base_url} does not serve CHAT_MODEL={self._model!r}; "
                            f"it serves {available}")

    # --- what is served ---------------------------------------------------

    @property
    def max_images(self) -> int:
        return self._settings.openai_max_images if self._settings.openai_vision else 0

    def models(self) -> list[ModelDescription]:
        return [ModelDescription(name=self._model, backend=self.name, vision=self._settings.openai_vision,
                                 max_images_per_message=self.max_images, context_length=self._context_length)]

    async def close(self) -> None:
        await self._client.aclose()

    # --- one answer -------------------------------------------------------

    def _check_request(self, request: ChatRequest) -> None:
        if not self._ready:
            raise BackendUnavailable(f"not connected yet: waiting for the OpenAI-compatible server at "
                                     f"{self._base_url} to list its models")
        if request.model and request.model != self._model:
            raise ModelNotFound(f"model {request.model!r} is not served here; this service serves {self._model!r}")
        if request.adapter:
            raise ModelNotFound(f"adapter {request.adapter!r} is not available with the openai backend")
        # Checked here, before sending: a text-only server would either fail
        # with its own wording or, worse, answer while ignoring the image.
        if request.image_count and not self._settings.openai_vision:
            raise InvalidRequest(f"model {self._model!r} is configured as text-only; if it reads images, "
                                 "set OPENAI_VISION=true")
        if request.image_count > self.max_images:
            raise InvalidRequest(f"the conversation has {request.image_count} images; {self._model} takes at most "
                                 f"{self.max_images} per request (OPENAI_MAX_IMAGES)")

    def _payload(self, request: ChatRequest) -> dict:
        options = request.options
        payload = {"model": self._model, "messages": [_message_payload(m) for m in request.messages],
                   "stream": True, "stream_options": {"include_usage": True},
                   "max_tokens": options.max_tokens or self._settings.chat_max_tokens}
        # Unset options are left out, so the server's (or the model's) defaults apply.
        mapped = {"temperature": options.temperature, "top_p": options.top_p, "seed": options.seed}
        payload.update({k: v for k, v in mapped.items() if v is not None})
        if options.stop:
            payload["stop"] = list(options.stop)
        return payload

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._check_request(request)
        payload = self._payload(request)
        answer = _Answer(time.perf_counter())
        try:
            # Leaving this block early (the gRPC caller cancelled) closes the
            # response; an unfinished HTTP/1.1 body cannot be reused, so httpx
            # drops the connection and the server sees the client go away.
            async with self._client.stream("POST", "/chat/completions", json=payload) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_for_status(response.status_code, _response_message(response),
                                            self._model, self._base_url)
                async for event in sse_events(response.aiter_lines()):
                    if event.event not in ("message", "error"):
                        continue  # named events (pings and the like) carry no chat chunks
                    if event.data.strip() == "[DONE]":
                        break
                    text = answer.take(self._chunk(event))
                    if text:
                        yield text
            yield answer.final()
        except httpx.ConnectError as error:
            raise BackendUnavailable(f"cannot reach the OpenAI-compatible server at {self._base_url}: {error}") from error
        except httpx.TransportError as error:
            raise BackendUnavailable(f"lost the connection to the OpenAI-compatible server at {self._base_url} "
                                     f"({type(error).__name__}: {error})") from error

    def _chunk(self, event: SSEEvent) -> dict:
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise BackendUnavailable(f"the server at {self._base_url} sent an event that is not JSON: "
                                     f"{event.data[:200]!r}") from None
        is_error = isinstance(chunk, dict) and ("error" in chunk or chunk.get("object") == "error")
        if event.event == "error" or is_error:
            raise self._stream_error(chunk)
        if not isinstance(chunk, dict):
            raise BackendUnavailable(f"the server at {self._base_url} sent an unexpected event: {event.data[:200]!r}")
        return chunk

    def _stream_error(self, payload: object) -> ChatError:
        """An error reported inside the stream: mapped like an HTTP error when it
        says which kind it is, else UNAVAILABLE (the server failed mid-answer)."""
        inner = payload.get("error", payload) if isinstance(payload, dict) else payload
        status = None
        if isinstance(inner, dict):
            code = inner.get("code")
            status = code if isinstance(code, int) else _STATUS_BY_TYPE.get(str(inner.get("type")))
        message = _error_message(payload)
        if status:
            return _error_for_status(status, message, self._model, self._base_url)
        return BackendUnavailable(f"the server at {self._base_url} failed while answering: {message}")


class _Answer:
    """What the chunks of one answer add up to: text, finish reason, usage, timings."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_text_at: float | None = None
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.text_chunks = 0
        self.tokens_per_second: float | None = None

    def take(self, chunk: dict) -> str:
        """Records one chunk; returns its text (may be empty)."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        timings = chunk.get("timings")  # llama.cpp's server measures decoding speed itself
        if isinstance(timings, dict) and timings.get("predicted_per_second"):
            self.tokens_per_second = float(timings["predicted_per_second"])
        text = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            text += (choice.get("delta") or {}).get("content") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if text:
            self.text_chunks += 1
            self.first_text_at = self.first_text_at or time.perf_counter()
        return text

    def final(self) -> ChatFinal:
        if self.finish_reason is None:
            # An answer cut off without a reason must not pass for a whole one.
            raise BackendUnavailable("the OpenAI-compatible server closed the stream before the answer was finished")
        usage = self.usage or {}
        now = time.perf_counter()
        return ChatFinal(
            # content_filter, tool_calls…: the answer ended on the model's side, as with a stop.
            finish_reason="length" if self.finish_reason == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            # Servers that ignore include_usage send about one token per chunk:
            # counting chunks is the best estimate left.
            completion_tokens=int(usage.get("completion_tokens") or self.text_chunks),
            time_to_first_token=(self.first_text_at or now) - self.started,
            total_seconds=now - self.started,
            measured_tokens_per_second=self.tokens_per_second,
        )
