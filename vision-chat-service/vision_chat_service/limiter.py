"""Bounded admission for model work: a few run, a few wait, the rest are refused.

Refusing at once (RESOURCE_EXHAUSTED → HTTP 429) beats an unbounded queue in
which every caller eventually times out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import QueueFull


class ConcurrencyLimiter:
    def __init__(self, workers: int, max_queue: int) -> None:
        self._slots = asyncio.Semaphore(workers)
        self._max_waiting = max_queue
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise QueueFull(f"the chat service is busy ({self._waiting} requests waiting); retry shortly")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
