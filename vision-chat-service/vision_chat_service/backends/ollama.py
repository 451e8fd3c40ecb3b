"""Backend that forwards chat to an Ollama server (the GPU server's default).

Wire protocol: https://github.com/ollama/ollama/blob/main/docs/api.md — POST
/api/chat streams NDJSON lines `{"message": {"content": ...}, "done": false}`
and ends with a `done: true` line carrying `done_reason` and token counts; an
error is a JSON `{"error": ...}`, either as the HTTP body or as a line in the
middle of the stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx

from ..config import Settings
from ..domain import ChatFinal, ChatRequest
from ..errors import BackendUnavailable, ChatError, InvalidRequest, ModelNotFound, QueueFull
from .base import ModelDescription, StreamEvent

log = logging.getLogger(__name__)

# mllama (llama3.2-vision) stopped loading in Ollama 0.30 ("unknown model
# architecture: 'mllama'"); 0.24.0 is the last release reported to run it.
MLLAMA_LAST_GOOD = (0, 24, 0)
MLLAMA_FIRST_BROKEN = (0, 30, 0)


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.lstrip("v").split("-")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


def _error_for_status(status: int, message: str, model: str) -> ChatError:
    """Maps an HTTP error from Ollama to the service's own error."""
    if status == 404:
        return ModelNotFound(f"Ollama does not have model {model!r} ({message}); pull it with `ollama pull {model}`")
    if status in (429, 503):
        return QueueFull(f"Ollama is busy: {message}")
    if status == 400:
        return InvalidRequest(f"Ollama refused the request: {message}")
    return BackendUnavailable(f"Ollama failed with HTTP {status}: {message}")


class OllamaBackend:
    name = "ollama"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model = settings.model_name
        # No read timeout: a long answer may pause between tokens; the gateway's
        # gRPC deadline bounds the whole call instead.
        self._client = httpx.AsyncClient(base_url=settings.ollama_url,
                                         timeout=httpx.Timeout(10.0, read=None))
        self._vision = False
        self._family = ""
        self._context_length = 0

    async def start(self) -> None:
        """Waits for Ollama, then checks that it can serve the model as configured."""
        version = await self._wait_for_version()
        show = await self._show_model()
        self._describe(show)
        self._check_release(version)
        log.info("ollama %s serves %s (family %s, vision=%s)", version, self._model, self._family, self._vision)

    async def _wait_for_version(self) -> str:
        delay = 0.5
        while True:
            try:
                response = await self._client.get("/api/version")
                response.raise_for_status()
                return response.json().get("version", "0")
            except (httpx.HTTPError, ValueError) as error:
                log.warning("waiting for Ollama at %s (%s)", self._settings.ollama_url, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _show_model(self) -> dict:
        response = await self._client.post("/api/show", json={"model": self._model})
        if response.status_code == 404:
            await self._pull_model()
            response = await self._client.post("/api/show", json={"model": self._model})
        if response.status_code != 200:
            raise _error_for_status(response.status_code, _error_text(response), self._model)
        return response.json()

    async def _pull_model(self) -> None:
        log.info("model %s is not in Ollama yet: pulling it (this can take minutes)", self._model)
        last_status = ""
        async with self._client.stream("POST", "/api/pull", json={"model": self._model, "stream": True},
                                       timeout=httpx.Timeout(10.0, read=None)) as response:
            async for line in response.aiter_lines():
                progress = json.loads(line) if line.strip() else {}
                if "error" in progress:
                    raise ModelNotFound(f"Ollama could not pull {self._model!r}: {progress['error']}")
                if progress.get("status") != last_status:
                    last_status = progress.get("status", "")
                    log.info("pull %s: %s", self._model, last_status)

    def _describe(self, show: dict) -> None:
        details = show.get("details") or {}
        info = show.get("model_info") or {}
        self._family = details.get("family") or info.get("general.architecture", "")
        self._vision = "vision" in (show.get("capabilities") or []) or self._family == "mllama"
        self._context_length = next((int(v) for k, v in info.items() if k.endswith(".context_length")), 0)

    def _check_release(self, version: str) -> None:
        if self._family == "mllama" and parse_version(version) >= MLLAMA_FIRST_BROKEN:
            raise BackendUnavailable(
                f"Ollama {version} cannot run {self._model} (architecture mllama; releases from 0.30 fail with "
                f"\"unknown model architecture: 'mllama'\"). Pin the Ollama image to 0.24.0, "
                "or choose another vision model such as qwen2.5vl or gemma3 with CHAT_MODEL")

    @property
    def max_images_per_message(self) -> int:
        # Ollama runs mllama with one image per message; other vision models take several.
        if not self._vision:
            return 0
        return 1 if self._family == "mllama" else 8

    def models(self) -> list[ModelDescription]:
        return [ModelDescription(name=self._model, backend=self.name, vision=self._vision,
                                 max_images_per_message=self.max_images_per_message,
                                 context_length=self._context_length)]

    async def close(self) -> None:
        await self._client.aclose()

    def _payload(self, request: ChatRequest) -> dict:
        messages = []
        for index, message in enumerate(request.messages):
            entry = {"role": message.role.value, "content": message.text}
            if message.images:
                self._check_images(index, len(message.images))
                # Ollama takes raw base64, without a data: URL prefix.
                entry["images"] = [base64.b64encode(data).decode("ascii") for data in message.images]
            messages.append(entry)
        return {"model": self._model, "messages": messages, "stream": True,
                "keep_alive": self._settings.ollama_keep_alive, "options": self._options(request)}

    def _check_images(self, index: int, count: int) -> None:
        if not self._vision:
            raise InvalidRequest(f"model {self._model!r} cannot read images; set CHAT_MODEL to a vision model "
                                 "(for example llama3.2-vision or qwen2.5vl)")
        if count > self.max_images_per_message:
            raise InvalidRequest(f"messages[{index}] has {count} images; {self._model} takes at most "
                                 f"{self.max_images_per_message} per message")

    def _options(self, request: ChatRequest) -> dict:
        options = request.options
        mapped = {"temperature": options.temperature, "top_p": options.top_p,
                  "num_predict": options.max_tokens or self._settings.chat_max_tokens, "seed": options.seed}
        result = {k: v for k, v in mapped.items() if v is not None}
        if options.stop:
            result["stop"] = list(options.stop)
        return result

    def _check_request(self, request: ChatRequest) -> None:
        if request.model and request.model != self._model:
            raise ModelNotFound(f"model {request.model!r} is not served here; this service serves {self._model!r}")
        if request.adapter:
            raise ModelNotFound(f"adapter {request.adapter!r} is not available with the ollama backend")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._check_request(request)
        payload = self._payload(request)
        started = time.perf_counter()
        first_token_at = None
        try:
            async with self._client.stream("POST", "/api/chat", json=payload) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_for_status(response.status_code, _error_text(response), self._model)
                async for chunk in _ndjson(response):
                    if "error" in chunk:
                        raise BackendUnavailable(f"Ollama failed while answering: {chunk['error']}")
                    text = (chunk.get("message") or {}).get("content", "")
                    if text:
                        first_token_at = first_token_at or time.perf_counter()
                        yield text
                    if chunk.get("done"):
                        yield _final(chunk, started, first_token_at)
                        return
            raise BackendUnavailable("Ollama closed the stream before it was done")
        except httpx.TransportError as error:
            if first_token_at is not None:
                # Connected, then lost: Ollama (or its runner) died or restarted while answering.
                raise BackendUnavailable(f"Ollama stopped answering in the middle of the answer ({error}); "
                                         "the text so far was sent") from error
            if isinstance(error, httpx.RemoteProtocolError):
                raise BackendUnavailable(f"Ollama closed the connection before answering ({error})") from error
            raise BackendUnavailable(f"cannot reach Ollama at {self._settings.ollama_url}: {error}") from error


async def _ndjson(response: httpx.Response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            raise BackendUnavailable(f"Ollama sent a line that is not JSON: {line[:200]!r}") from None


def _final(chunk: dict, started: float, first_token_at: float | None) -> ChatFinal:
    now = time.perf_counter()
    return ChatFinal(
        finish_reason="length" if chunk.get("done_reason") == "length" else "stop",
        prompt_tokens=int(chunk.get("prompt_eval_count") or 0),
        completion_tokens=int(chunk.get("eval_count") or 0),
        time_to_first_token=(first_token_at or now) - started,
        total_seconds=now - started,
        measured_tokens_per_second=_eval_rate(chunk),
    )


def _eval_rate(chunk: dict) -> float | None:
    """Ollama's own generation speed: eval_count tokens in eval_duration ns."""
    count, duration = chunk.get("eval_count"), chunk.get("eval_duration")
    if not count or not duration:
        return None
    return float(count) / (float(duration) / 1e9)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return response.text[:500] or response.reason_phrase
