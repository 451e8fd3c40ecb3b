"""In-process backend: a Hugging Face causal LM run by transformers.

Generation runs in a worker thread (it is blocking and CPU/GPU bound); text
reaches the event loop through an asyncio queue as the model produces it.
Closing the stream sets a flag that a stopping criterion checks after every
token, so a cancelled call stops the model within one token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import torch
from chatbot_protos.serving import in_daemon_thread
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, TextStreamer

from .. import embedded_model
from ..config import Settings
from ..domain import ChatFinal, ChatRequest
from ..errors import BackendUnavailable, InvalidRequest, ModelNotFound
from ..limiter import ConcurrencyLimiter
from ..stop_strings import StopStringFilter
from .base import ModelDescription, StreamEvent

log = logging.getLogger(__name__)


@dataclass
class _Finished:
    """Sent by the worker thread when generate() returns or fails."""

    completion_tokens: int = 0
    error: BaseException | None = None


class _CancelCriteria(StoppingCriteria):
    def __init__(self, cancelled: threading.Event) -> None:
        self._cancelled = cancelled

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._cancelled.is_set(), dtype=torch.bool)


class _QueueStreamer(TextStreamer):
    """TextStreamer already holds back incomplete words (and so incomplete UTF-8);
    this one hands each finished piece to the event loop instead of printing it."""

    def __init__(self, tokenizer, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._loop, self._queue = loop, queue

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, text)


def _pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model_name = settings.model_name
        self._device = _pick_device(settings.chat_device)
        self._limiter = ConcurrencyLimiter(settings.chat_workers, settings.chat_max_queue)
        self._model = None
        self._tokenizer = None

    async def start(self) -> None:
        # A daemon thread, so that SIGTERM during a long download or load exits at once.
        await in_daemon_thread(self._load, "chat-model-loader")

    async def close(self) -> None:
        self._model = None

    def _resolve_path(self) -> str | Path:
        if self._model_name == embedded_model.EMBEDDED_NAME:
            return embedded_model.provision(self._settings.models_dir)
        # A local folder, or a Hugging Face id fetched into MODELS_DIR on a server with internet.
        return self._model_name

    def _load(self) -> None:
        path = self._resolve_path()
        started = time.perf_counter()
        cache_dir = self._settings.models_dir / "huggingface"
        dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        self._tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, cache_dir=cache_dir)
        self._model = model.to(self._device).eval()
        log.info("loaded %s on %s in %.1f s", self._model_name, self._device, time.perf_counter() - started)

    @property
    def context_length(self) -> int:
        return int(getattr(self._model.config, "max_position_embeddings", 0) or 0) if self._model else 0

    def models(self) -> list[ModelDescription]:
        return [ModelDescription(name=self._model_name, backend=self.name, vision=False,
                                 max_images_per_message=0, context_length=self.context_length)]

    def _check(self, request: ChatRequest) -> None:
        if self._model is None:
            raise BackendUnavailable(f"model {self._model_name} is still loading")
        if request.model and request.model != self._model_name:
            raise ModelNotFound(f"model {request.model!r} is not served here; this service serves {self._model_name!r}")
        if request.adapter:
            raise ModelNotFound(f"adapter {request.adapter!r} is not available")
        if request.image_count:
            raise InvalidRequest(
                f"model {self._model_name!r} is text-only and cannot read images; to chat about images, "
                "run the service with CHAT_BACKEND=ollama and a vision model (CHAT_MODEL=llama3.2-vision)"
            )

    def _encode(self, request: ChatRequest, max_tokens: int) -> dict:
        messages = [{"role": m.role.value, "content": m.text} for m in request.messages]
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        prompt_tokens = inputs["input_ids"].shape[1]
        if self.context_length and prompt_tokens + max_tokens > self.context_length:
            raise InvalidRequest(
                f"the conversation is {prompt_tokens} tokens; with max_tokens={max_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens")
        return {k: v.to(self._device) for k, v in inputs.items()}

    def _generation_kwargs(self, request: ChatRequest, max_tokens: int) -> dict:
        options = request.options
        kwargs: dict = {"max_new_tokens": max_tokens, "pad_token_id": self._tokenizer.eos_token_id}
        temperature = self._settings.chat_temperature if options.temperature is None else options.temperature
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=options.top_p or 1.0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if options.stop:
            # Stops the model early; StopStringFilter trims the stop string from the text.
            kwargs.update(stop_strings=list(options.stop), tokenizer=self._tokenizer)
        return kwargs

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._check(request)
        max_tokens = request.options.max_tokens or self._settings.chat_max_tokens
        async with self._limiter.slot():
            started = time.perf_counter()
            inputs = self._encode(request, max_tokens)
            kwargs = self._generation_kwargs(request, max_tokens)
            async for event in self._run(inputs, kwargs, request, started):
                yield event

    async def _run(self, inputs: dict, kwargs: dict, request: ChatRequest, started: float) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        worker = loop.run_in_executor(None, self._generate, inputs, kwargs, request.options.seed,
                                      _QueueStreamer(self._tokenizer, loop, queue), cancelled, loop, queue)
        stop_filter = StopStringFilter(request.options.stop)
        first_token_at = None
        try:
            while not isinstance(item := await queue.get(), _Finished):
                text = stop_filter.feed(item)
                if text:
                    first_token_at = first_token_at or time.perf_counter()
                    yield text
            if item.error is not None:
                raise BackendUnavailable(f"generation failed: {item.error}") from item.error
            if tail := stop_filter.flush():
                yield tail
            now = time.perf_counter()
            yield ChatFinal(
                finish_reason="length" if item.completion_tokens >= kwargs["max_new_tokens"] and not stop_filter.stopped else "stop",
                prompt_tokens=int(inputs["input_ids"].shape[1]),
                completion_tokens=item.completion_tokens,
                time_to_first_token=(first_token_at or now) - started,
                total_seconds=now - started,
            )
        finally:
            # Runs on normal end, on error, and when the caller cancels: the model
            # stops at its next token, and the slot is held until it has.
            cancelled.set()
            await asyncio.shield(worker)

    def _generate(self, inputs, kwargs, seed, streamer, cancelled, loop, queue) -> None:
        finished = _Finished()
        try:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                output = self._model.generate(**inputs, **kwargs, streamer=streamer,
                                              stopping_criteria=[_CancelCriteria(cancelled)])
            finished.completion_tokens = int(output.shape[1] - inputs["input_ids"].shape[1])
        except Exception as error:  # reported to the caller as UNAVAILABLE, with a log line
            log.exception("generation failed")
            finished.error = error
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, finished)
