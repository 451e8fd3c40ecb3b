"""A bounded thread pool that asyncio code can await.

Why: decoding and transcribing are blocking, CPU-bound calls (CTranslate2
releases the GIL while it works). Running them on the event loop would freeze
health checks and every other call; running them on an unbounded pool would
let a burst queue up work that finishes long after the clients gave up. So:
``workers`` threads, at most ``max_queue`` jobs waiting, and ``QueueFull``
(RESOURCE_EXHAUSTED, HTTP 429) for anything beyond.

With batching (ASR_BATCH_SIZE > 1) a job spends most of its time waiting for
its batch rather than computing, so the pool gets more threads than model
replicas (``set_threads``) while the admission bound stays ``workers +
max_queue``. A job learns that its caller went away through
``current_cancellation()``: the engine uses it to drop the request's chunks
still waiting for a batch and end its wait. When the last job finishes, its
worker thread hands the memory the jobs freed back to the OS (free_memory.py),
after the caller has its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import QueueFull
from .free_memory import release_free_memory

T = TypeVar("T")

WORKER_THREAD_PREFIX = "asr-worker"
_job = threading.local()  # .cancellation: the Cancellation of the job this thread runs


class Cancellation:
    """Set when the caller awaiting a job is cancelled; callbacks run once, then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when cancelled (at once if already)."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()


def current_cancellation() -> Cancellation:
    """The running job's cancellation; a never-cancelled one outside the pool."""
    return getattr(_job, "cancellation", None) or Cancellation()


def _run_job(cancellation: Cancellation, fn: Callable[..., T], *args) -> T:
    _job.cancellation = cancellation
    try:
        return fn(*args)
    finally:
        _job.cancellation = None


class BoundedWorkerPool:
    """``workers`` threads plus a waiting line of at most ``max_queue`` jobs."""

    def __init__(self, workers: int, max_queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=WORKER_THREAD_PREFIX)
        self.threads = workers
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
        cancellation = Cancellation()
        try:
            future: Future[T] = self._executor.submit(_run_job, cancellation, fn, *args)
        except BaseException:
            self._release()
            raise
        # Callbacks run in the order they were added: first the one that hands
        # the result to the event loop, then the one that frees the slot (and,
        # when the pool goes idle, memory), so the caller never waits for that.
        result = asyncio.wrap_future(future)
        future.add_done_callback(self._release)
        try:
            return await result
        except asyncio.CancelledError:
            cancellation.cancel()  # a running job may stop waiting (batching)
            raise

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` threads (at most the admission bound) from now on.

        Called once the engine is loaded and before any job is admitted (the
        servicer refuses calls until then); a no-op when the count is unchanged.
        """
        threads = max(1, min(threads, self._capacity))
        if threads == self.threads:
            return
        old = self._executor
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=WORKER_THREAD_PREFIX)
        self.threads = threads
        old.shutdown(wait=False)

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
            idle = self._admitted == 0
        if not idle:
            return
        # A done callback runs in the worker thread once the result is set, so
        # the caller already has it. A job that was done before its callback was
        # added calls back on the event loop, which must not block on this: a
        # worker does it instead.
        if threading.current_thread().name.startswith(WORKER_THREAD_PREFIX):
            release_free_memory()
        else:
            with contextlib.suppress(RuntimeError):  # the pool is shutting down
                self._executor.submit(release_free_memory)
