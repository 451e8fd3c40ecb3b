"""A bounded thread pool that asyncio code can await.

Why: decoding and transcribing are blocking, CPU-bound calls (CTranslate2
releases the GIL while it works). Running them on the event loop would freeze
health checks and every other call; running them on an unbounded pool would
let a burst queue up work that finishes long after the clients gave up. So:
``workers`` threads, at most ``max_queue`` jobs waiting, and ``QueueFull``
(RESOURCE_EXHAUSTED, HTTP 429) for anything beyond.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import QueueFull

T = TypeVar("T")


class BoundedWorkerPool:
    """``workers`` threads plus a waiting line of at most ``max_queue`` jobs."""

    def __init__(self, workers: int, max_queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr-worker")
        self._capacity = workers + max_queue
        self._admitted = 0  # running + waiting jobs
        self._lock = threading.Lock()  # released from worker threads

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(*args)`` in a worker thread; raise ``QueueFull`` when saturated.

        If the awaiting call is cancelled (client gone), a job still waiting is
        dropped; one already running finishes and then frees its slot. The slot
        is freed by the job itself, never by the caller, so the bound holds
        even when callers vanish.
        """
        self._admit()
        try:
            future: Future[T] = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Drop waiting jobs and wait for running ones to finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self._capacity:
                raise QueueFull(
                    f"asr-service is busy: {self._admitted} transcriptions running or "
                    "queued (ASR_WORKERS + ASR_MAX_QUEUE); retry shortly"
                )
            self._admitted += 1

    def _release(self, _future: Future | None = None) -> None:
        with self._lock:
            self._admitted -= 1
