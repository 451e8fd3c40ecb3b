"""What generate() calls back while it runs: a stop flag checked after every
token, and a streamer that hands text to the event loop as it is produced."""

from __future__ import annotations

import asyncio
import threading
import time

import torch
from transformers import StoppingCriteria, TextStreamer


class CancelCriteria(StoppingCriteria):
    def __init__(self, cancelled: threading.Event) -> None:
        self._cancelled = cancelled

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        # On the inputs' device: generate() combines it with its own flags there (CUDA on a GPU).
        return torch.full((input_ids.shape[0],), self._cancelled.is_set(), dtype=torch.bool, device=input_ids.device)


class QueueStreamer(TextStreamer):
    """TextStreamer already holds back incomplete words (and so incomplete UTF-8);
    this one hands each finished piece to the event loop instead of printing it,
    and times the tokens as they come (text can trail them by a word)."""

    def __init__(self, tokenizer, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._loop, self._queue = loop, queue
        self._token_times: list[float] = []

    def put(self, value) -> None:
        if not self.next_tokens_are_prompt:
            self._token_times.append(time.perf_counter())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, text)

    @property
    def tokens_per_second(self) -> float | None:
        times = self._token_times
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])
