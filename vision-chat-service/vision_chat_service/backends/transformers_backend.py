"""In-process backend: a Hugging Face model run by transformers, text or vision,
with the trainer's LoRA adapters served on top of it.

Generation runs in a worker thread (it is blocking and CPU/GPU bound); text
reaches the event loop through an asyncio queue as the model produces it.
Closing the stream sets a flag that a stopping criterion checks after every
token, so a cancelled call stops the model within one token, and the worker
slot is held until it has.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from chatbot_protos.serving import in_daemon_thread

from .. import embedded_model
from ..adapters import base_matcher, scan
from ..config import Settings
from ..domain import ChatFinal, ChatMessage, ChatRequest, GenerationOptions, Role
from ..errors import BackendUnavailable, ChatError, InvalidRequest, ModelNotFound
from ..limiter import ConcurrencyLimiter
from ..stop_strings import StopStringFilter
from .adapter_pool import AdapterPool
from .base import ModelDescription, StreamEvent
from .loading import LoadedModel, load_model, pick_device
from .streaming import CancelCriteria, QueueStreamer

log = logging.getLogger(__name__)


def warm_up_image() -> bytes:
    """A small gray PNG: enough to run a vision model's image path once."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class _Finished:
    """Sent by the worker thread when generate() returns or fails."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_second: float | None = None
    error: BaseException | None = None


@dataclass
class _Job:
    request: ChatRequest
    adapter: str | None
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: _Finished = field(default_factory=_Finished)


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model_name = settings.model_name
        self._device = pick_device(settings.chat_device)
        self._limiter = ConcurrencyLimiter(settings.chat_workers, settings.chat_max_queue)
        # Its own pool, sized to the workers: the loop's default executor is
        # shared with other blocking work and capped at a few threads.
        self._executor = ThreadPoolExecutor(settings.chat_workers, thread_name_prefix="chat-generate")
        self._loaded: LoadedModel | None = None
        self._adapters: AdapterPool | None = None
        self._matches_base = None
        self._skipped: dict[str, str] = {}
        self._max_token_chars = 0  # characters of the vocabulary's longest token, set at load
        self._watcher: asyncio.Task | None = None

    # --- life cycle -------------------------------------------------------

    async def start(self) -> None:
        # A daemon thread, so that SIGTERM during a long download or load exits at once.
        await in_daemon_thread(self._load, "chat-model-loader")
        if self._settings.chat_warmup == "on" or (self._settings.chat_warmup == "auto" and self._device == "cuda"):
            await in_daemon_thread(self._warm_up, "chat-model-warmup")
        await self.refresh_adapters()
        if self._settings.chat_adapters_poll_s > 0:
            self._watcher = asyncio.create_task(self._watch_adapters())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loaded = None

    def _resolve_path(self) -> str | Path:
        if self._model_name == embedded_model.EMBEDDED_NAME:
            return embedded_model.provision(self._settings.models_dir)
        # A local folder, or a Hugging Face id fetched into MODELS_DIR on a server with internet.
        return self._model_name

    def _load(self) -> None:
        path = self._resolve_path()
        started = time.perf_counter()
        loaded = load_model(path, self._settings, self._device)
        self._adapters = AdapterPool(loaded.model)
        self._matches_base = base_matcher(self._model_name, path)
        self._max_token_chars = max((len(token) for token in loaded.prompter.tokenizer.get_vocab()), default=0)
        self._loaded = loaded
        weights = "nf4" if self._settings.chat_quantization == "4bit" else str(loaded.dtype).removeprefix("torch.")
        log.info("loaded %s (%s, %s, %s weights, %.0f MiB) on %s in %.1f s", self._model_name, loaded.family,
                 "vision" if loaded.prompter.vision else "text only", weights,
                 loaded.model.get_memory_footprint() / 2**20, self._device, time.perf_counter() - started)

    def _warm_up(self) -> None:
        """Runs one short generation, through the same path as a request, so that
        the first user does not pay for the device's lazy start-up."""
        started = time.perf_counter()
        images = (warm_up_image(),) if self._loaded.prompter.vision else ()
        request = ChatRequest(messages=(ChatMessage(Role.USER, "Hola", images),),
                              options=GenerationOptions(temperature=0, max_tokens=2))
        job = _Job(request, None, 2, loop=None, queue=None)
        with torch.inference_mode():
            self._loaded.model.generate(**self._encode(job), **self._generation_kwargs(job))
        log.info("warmed up (one %s generation) in %.1f s", "image + text" if images else "text",
                 time.perf_counter() - started)

    # --- adapters ---------------------------------------------------------

    async def refresh_adapters(self) -> None:
        """Scans ADAPTERS_DIR and brings the loaded adapters in line with it."""
        found, skipped = await asyncio.to_thread(scan, self._settings.adapters_dir, self._matches_base)
        for folder, reason in skipped.items():
            if self._skipped.get(folder) != reason:  # log each problem once, not at every scan
                log.warning("adapter folder %s skipped: %s", self._settings.adapters_dir / folder, reason)
        self._skipped = skipped
        await asyncio.to_thread(self._adapters.sync, found)

    async def _watch_adapters(self) -> None:
        while True:
            await asyncio.sleep(self._settings.chat_adapters_poll_s)
            try:
                await self.refresh_adapters()
            except Exception:  # a bad scan must not end the watching
                log.exception("scanning %s failed", self._settings.adapters_dir)

    # --- description ------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._loaded.context_length if self._loaded else 0

    def models(self) -> list[ModelDescription]:
        prompter = self._loaded.prompter if self._loaded else None
        vision = bool(prompter and prompter.vision)
        max_images = prompter.max_images_per_message if prompter else 0
        base = ModelDescription(name=self._model_name, backend=self.name, vision=vision,
                                max_images_per_message=max_images, context_length=self.context_length)
        adapters = list(self._adapters.loaded.values()) if self._adapters else []
        return [base] + [ModelDescription(name=info.name, backend=self.name, vision=vision,
                                          max_images_per_message=max_images, context_length=self.context_length,
                                          base_model=self._model_name) for info in adapters]

    # --- requests ---------------------------------------------------------

    def _check(self, request: ChatRequest) -> str | None:
        """Refuses what cannot be served before the request takes a slot;
        returns the adapter to use (None = the base model)."""
        if self._loaded is None:
            raise BackendUnavailable(f"model {self._model_name} is still loading")
        loaded = self._adapters.loaded
        adapter = request.adapter
        if request.model and request.model != self._model_name:
            # OpenAI-style clients name an adapter as the model (as with vLLM's LoRA serving).
            if request.model not in loaded or adapter:
                raise ModelNotFound(f"model {request.model!r} is not served here; this service serves "
                                    f"{self._model_name!r}")
            adapter = request.model
        self._check_length(request)
        if adapter and adapter not in loaded:
            names = ", ".join(sorted(loaded)) or "none"
            raise ModelNotFound(f"adapter {adapter!r} is not available (loaded adapters: {names}; "
                                f"they come from ADAPTERS_DIR={self._settings.adapters_dir})")
        self._check_images(request)
        return adapter or None

    def _check_length(self, request: ChatRequest) -> None:
        """Refuses text that cannot fit the context without tokenizing it.

        Tokenizing is what made a huge prompt costly: a 20 MB message held the
        worker for ~50 s and left ~600 MB more in the process each time, only to
        be refused for its token count (tests/hostile/test_corpus.py). No token
        covers more characters than the vocabulary's longest token, so text
        longer than context × that length is certain not to fit.
        """
        characters = sum(len(message.text) for message in request.messages)
        if self.context_length and self._max_token_chars and \
                characters > self.context_length * self._max_token_chars:
            raise InvalidRequest(f"the conversation is {characters:,} characters, too long for the model's "
                                 f"context of {self.context_length} tokens")

    def _check_images(self, request: ChatRequest) -> None:
        prompter = self._loaded.prompter
        if request.image_count and not prompter.vision:
            raise InvalidRequest(
                f"model {self._model_name!r} is text-only and cannot read images; to chat about images, set "
                "CHAT_MODEL to a vision model (for example HuggingFaceTB/SmolVLM-256M-Instruct), or run the "
                "service with CHAT_BACKEND=ollama and a vision model (CHAT_MODEL=llama3.2-vision)")
        for index, message in enumerate(request.messages):
            if len(message.images) > prompter.max_images_per_message:
                raise InvalidRequest(
                    f"messages[{index}] has {len(message.images)} images; {self._model_name} "
                    f"({self._loaded.family}) takes at most {prompter.max_images_per_message} per message")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        adapter = self._check(request)
        max_tokens = request.options.max_tokens or self._settings.chat_max_tokens
        async with self._limiter.slot():
            loop = asyncio.get_running_loop()
            job = _Job(request, adapter, max_tokens, loop, asyncio.Queue())
            async for event in self._run(job):
                yield event

    async def _run(self, job: _Job) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        worker = job.loop.run_in_executor(self._executor, self._generate, job)
        stop_filter = StopStringFilter(job.request.options.stop)
        first_token_at = None
        done = False
        try:
            while not isinstance(item := await job.queue.get(), _Finished):
                text = stop_filter.feed(item)
                if text:
                    first_token_at = first_token_at or time.perf_counter()
                    yield text
            if isinstance(item.error, ChatError):
                raise item.error
            if item.error is not None:
                raise BackendUnavailable(f"generation failed: {item.error}") from item.error
            if tail := stop_filter.flush():
                yield tail
            now = time.perf_counter()
            final = ChatFinal(
                finish_reason="length" if item.completion_tokens >= job.max_tokens and not stop_filter.stopped
                else "stop",
                prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens,
                time_to_first_token=(first_token_at or now) - started,
                total_seconds=now - started,
                measured_tokens_per_second=item.tokens_per_second,
            )
            done = True
            log.info("answered%s: %d prompt + %d completion tokens, first token after %.2f s, %.1f tokens/s",
                     f" with adapter {job.adapter}" if job.adapter else "", final.prompt_tokens,
                     final.completion_tokens, final.time_to_first_token, final.tokens_per_second)
            yield final
        finally:
            # Runs on normal end, on error, and when the caller cancels: the model
            # stops at its next token, and the slot is held until it has.
            job.cancelled.set()
            await asyncio.shield(worker)
            if not done and job.finished.error is None:
                log.info("generation stopped after %d tokens: the client cancelled",
                         job.finished.completion_tokens)

    def _encode(self, job: _Job) -> dict:
        inputs = self._loaded.prompter.encode(job.request.messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        job.finished.prompt_tokens = prompt_tokens
        if self.context_length and prompt_tokens + job.max_tokens > self.context_length:
            raise InvalidRequest(
                f"the conversation is {prompt_tokens} tokens; with max_tokens={job.max_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens")
        # Pixel values come as float32; a bf16 model wants bf16.
        dtype = self._loaded.dtype
        return {k: v.to(self._device, dtype=dtype) if v.is_floating_point() else v.to(self._device)
                for k, v in inputs.items()}

    def _generation_kwargs(self, job: _Job) -> dict:
        options, tokenizer = job.request.options, self._loaded.prompter.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs: dict = {"max_new_tokens": job.max_tokens, "pad_token_id": pad}
        temperature = self._settings.chat_temperature if options.temperature is None else options.temperature
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=options.top_p or 1.0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if options.stop:
            # Stops the model early; StopStringFilter trims the stop string from the text.
            kwargs.update(stop_strings=list(options.stop), tokenizer=tokenizer)
        return kwargs

    def _generate(self, job: _Job) -> None:
        finished = job.finished
        try:
            inputs = self._encode(job)  # here, not on the event loop: images take real work
            kwargs = self._generation_kwargs(job)
            streamer = QueueStreamer(self._loaded.prompter.tokenizer, job.loop, job.queue)
            with self._adapters.gate.use(job.adapter):
                if job.cancelled.is_set():
                    return  # the caller left while we waited for the adapter switch
                if job.request.options.seed is not None:
                    torch.manual_seed(job.request.options.seed)
                with torch.inference_mode():
                    output = self._loaded.model.generate(**inputs, **kwargs, streamer=streamer,
                                                         stopping_criteria=[CancelCriteria(job.cancelled)])
            finished.completion_tokens = int(output.shape[1] - inputs["input_ids"].shape[1])
            finished.tokens_per_second = streamer.tokens_per_second
        except ChatError as error:  # the caller's mistake (too long, bad image): its own status
            finished.error = error
        except Exception as error:  # reported to the caller as UNAVAILABLE, with a log line
            log.exception("generation failed")
            finished.error = error
        finally:
            job.loop.call_soon_threadsafe(job.queue.put_nowait, finished)
