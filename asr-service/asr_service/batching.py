"""Gathers the ≤30 s speech chunks of concurrent requests into batches.

Why: a GPU runs Whisper on 8 windows in about the time it takes for one
(bench/results/asr_gpu_rtf_h200_2026-11-28.txt: 512× against 62× real time
for base), and on any device one batched call amortises per-call overhead.
faster-whisper's ``BatchedInferencePipeline`` batches the chunks of *one*
audio; this scheduler does the same across requests, so two users speaking
at once share a model pass, and a long recording's chunks still go together.

How, kept deliberately small:

- A request (a *ticket*) brings its chunks already decoded, VAD-cut and turned
  into features, under a *key*: the decoding options that must be equal for
  chunks to share one ``generate`` call (language, task, beam size, prompt,
  word timestamps, temperature fallback). The engine builds both; this module
  never looks inside them.
- ``workers`` batcher threads (one per CTranslate2 model replica) each take
  the oldest waiting chunk's key, wait at most ``window`` seconds (counted
  from when that chunk arrived) for more chunks of the same key, up to
  ``batch_size``, and run them with ``run_batch(key, payloads)``. They wait
  only while another request is on its way (``incoming()``: being decoded
  and VAD-cut): a lone request on an idle service does not pay the window.
- Chunks are taken round-robin across the tickets of that key, in arrival
  order: a long recording's 100 chunks do not hold a 3 s clip behind them.
- ``Ticket.cancel()`` (the client went away) drops its chunks still waiting
  and wakes the thread waiting for the result at once; chunks already inside
  a running batch finish with it and their results are thrown away, so the
  other requests of that batch are unaffected.
- A failing batch fails only the tickets that had chunks in it.

The histogram of batch sizes (``stats()``) and the largest batch each ticket
took part in (``Ticket.largest_batch``) make the batching observable: the
servicer reports the latter in its log line and in trailing metadata.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any

logger = logging.getLogger(__name__)

# run_batch(key, payloads) → one result per payload, in order.
BatchRunner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class Ticket:
    """One request's chunks on their way through the batcher; ``result()`` waits."""

    def __init__(self, key: Hashable, payloads: Sequence[Any], owner: ChunkBatcher) -> None:
        self.key = key
        self._owner = owner
        self._waiting: deque[tuple[int, Any]] = deque(enumerate(payloads))
        self._results: list[Any] = [None] * len(payloads)
        self._left = len(payloads)
        self.arrived = time.monotonic()
        self.largest_batch = 0  # chunks in the largest batch this ticket was part of
        self.future: Future[list[Any]] = Future()
        self.state: dict[str, Any] = {}  # for the runner: per-request carry-over
        if not payloads:
            self.future.set_result([])

    def result(self, timeout: float | None = None) -> list[Any]:
        """The per-chunk results in submission order; raises ``CancelledError``
        once cancelled and whatever the batch raised if it failed."""
        return self.future.result(timeout)

    def cancel(self) -> None:
        """Drop the chunks still waiting and end the wait (idempotent, any thread)."""
        self._owner._cancel(self)

    @property
    def done(self) -> bool:
        return self.future.done()


class ChunkBatcher:
    """``workers`` threads running batches of at most ``batch_size`` compatible chunks."""

    def __init__(self, run_batch: BatchRunner, batch_size: int, window: float, workers: int = 1,
                 name: str = "asr-batcher") -> None:
        if batch_size < 1 or workers < 1 or window < 0:
            raise ValueError("batch_size and workers must be ≥ 1, window ≥ 0")
        self._run_batch = run_batch
        self.batch_size = batch_size
        self.window = window
        self._tickets: list[Ticket] = []  # with chunks still waiting, in arrival order
        self._cond = threading.Condition()
        self._closed = False
        self._incoming = 0  # requests being prepared that will submit chunks soon
        self._histogram: Counter[int] = Counter()  # batch size (chunks) → batches run
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, payloads: Sequence[Any]) -> Ticket:
        """Queue ``payloads`` (one request's chunks) under ``key``; returns at once."""
        ticket = Ticket(key, payloads, self)
        if not payloads:
            return ticket
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._tickets.append(ticket)
            self._cond.notify_all()
        return ticket

    @contextlib.contextmanager
    def incoming(self):
        """Wrap a request's preparation (decode, VAD, features) and its
        ``submit``: while any is inside, waiting chunks wait for it (up to the
        window) instead of running at once."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify_all()

    def stats(self) -> dict[int, int]:
        """Batch size (in chunks) → number of batches run so far."""
        with self._cond:
            return dict(sorted(self._histogram.items()))

    def close(self) -> None:
        """Fail what still waits and stop the threads once their batch is done."""
        with self._cond:
            self._closed = True
            waiting, self._tickets = self._tickets, []
            self._cond.notify_all()
        for ticket in waiting:
            _settle(ticket.future, error=RuntimeError("asr-service is stopping"))
        for thread in self._threads:
            thread.join(timeout=30)

    # --- the batcher threads -------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[tuple[Ticket, int, Any]] | None:
        """Block until a batch is due: full, or its oldest chunk waited ``window``."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._tickets:
                    self._cond.wait()
                    continue
                oldest = self._tickets[0]
                waiting = sum(len(t._waiting) for t in self._tickets if t.key == oldest.key)
                remaining = oldest.arrived + self.window - time.monotonic()
                if waiting >= self.batch_size or remaining <= 0 or not self._incoming:
                    return self._take(oldest.key)
                self._cond.wait(remaining)

    def _take(self, key: Hashable) -> list[tuple[Ticket, int, Any]]:
        """Up to ``batch_size`` chunks of ``key``, one per ticket per round (lock held)."""
        batch: list[tuple[Ticket, int, Any]] = []
        tickets = [t for t in self._tickets if t.key == key]
        while len(batch) < self.batch_size and tickets:
            for ticket in list(tickets):
                if len(batch) == self.batch_size:
                    break
                index, payload = ticket._waiting.popleft()
                batch.append((ticket, index, payload))
                if not ticket._waiting:
                    tickets.remove(ticket)
                    self._tickets.remove(ticket)
        # A ticket that still has chunks keeps its place but restarts its
        # window: it has just been served.
        for ticket in tickets:
            ticket.arrived = time.monotonic()
        if tickets:
            self._tickets.sort(key=lambda t: t.arrived)
        return batch

    def _run(self, batch: list[tuple[Ticket, int, Any]]) -> None:
        # Chunks of tickets cancelled since they were taken are not decoded.
        live = [item for item in batch if not item[0].done]
        if not live:
            return
        size = len(live)
        started = time.perf_counter()
        try:
            results = self._run_batch(live[0][0].key, [(ticket, payload) for ticket, _, payload in live])
        except BaseException as error:  # the batch failed: so do its requests, only them
            logger.exception("a batch of %d chunks failed", size)
            for ticket in {id(t): t for t, _, _ in live}.values():
                self._cancel(ticket, error=error)
            return
        requests = len({id(t) for t, _, _ in live})
        logger.debug("decoded a batch of %d chunks from %d requests in %.2f s",
                     size, requests, time.perf_counter() - started)
        finished: list[Ticket] = []
        with self._cond:  # two batcher threads may hold chunks of one ticket
            self._histogram[size] += 1
            for (ticket, index, _), result in zip(live, results, strict=True):
                ticket.largest_batch = max(ticket.largest_batch, size)
                ticket._results[index] = result
                ticket._left -= 1
                if ticket._left == 0:
                    finished.append(ticket)
        for ticket in finished:
            _settle(ticket.future, result=ticket._results)

    def _cancel(self, ticket: Ticket, error: BaseException | None = None) -> None:
        with self._cond:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
            ticket._waiting.clear()
            self._cond.notify_all()
        if error is None:
            ticket.future.cancel()
        else:
            _settle(ticket.future, error=error)


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless it already is (a cancel may race a result)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: cancelled or failed meanwhile
        pass


__all__ = ["BatchRunner", "CancelledError", "ChunkBatcher", "Ticket"]
