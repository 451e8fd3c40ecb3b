"""The ASR worker pool hands freed memory back only when idle, never before a
caller has its result (asr_service/worker_pool.py, free_memory.py).

test_memory.py shows the outcome over 200 real requests; these pin down the
rules with jobs that only sleep, in milliseconds: one hand-back per idle
moment, none while another job runs or waits, always from a worker thread
and after the awaiting caller has its result. The last checks that glibc
really gets the pages back.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from tests.asr.service_code import PACKAGE, service_module

worker_pool = service_module("worker_pool")


class HandBacks:
    """Stands in for release_free_memory: records the calling thread, and
    refuses to return until ``caller_has_result`` is set, so a hand-back run
    before the result reached its caller would hold that result back and show
    up as a timeout."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.caller_has_result = threading.Event()
        self.held_the_result_back = False

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)
        if not self.caller_has_result.wait(timeout=5):
            self.held_the_result_back = True


@pytest.fixture
def hand_backs(monkeypatch):
    recorder = HandBacks()
    monkeypatch.setattr(worker_pool, "release_free_memory", recorder)
    return recorder


def slow_text() -> str:
    time.sleep(0.05)
    return "text"


def test_an_idle_pool_hands_memory_back_after_the_caller_has_its_result(hand_backs):
    async def one_job():
        pool = worker_pool.BoundedWorkerPool(workers=1, max_queue=2)
        # Long enough to be running when the pool adds its callbacks, so the
        # hand-back runs on the path under test (the other path has its own test).
        result = await asyncio.wait_for(pool.run(slow_text), timeout=10)
        hand_backs.caller_has_result.set()
        await asyncio.sleep(0.05)
        pool.shutdown()
        return result

    assert asyncio.run(one_job()) == "text"
    assert not hand_backs.held_the_result_back
    assert len(hand_backs.threads) == 1
    assert hand_backs.threads[0].startswith(worker_pool.WORKER_THREAD_PREFIX)


def test_no_hand_back_while_another_job_runs_or_waits(hand_backs):
    hand_backs.caller_has_result.set()  # ordering is the first test's concern
    gate = threading.Event()

    async def two_jobs_then_one():
        pool = worker_pool.BoundedWorkerPool(workers=1, max_queue=2)
        # The first job holds the only worker until both are admitted (each
        # task admits in its first step, which runs before this one resumes);
        # then the first finishes while the second waits.
        both = asyncio.gather(pool.run(gate.wait, 10), pool.run(gate.wait, 10))
        await asyncio.sleep(0)
        gate.set()
        await both
        await asyncio.sleep(0.05)
        after_two = len(hand_backs.threads)
        await pool.run(time.sleep, 0.01)
        await asyncio.sleep(0.05)
        pool.shutdown()
        return after_two, len(hand_backs.threads)

    after_two, after_three = asyncio.run(two_jobs_then_one())
    assert (after_two, after_three) == (1, 2)


def test_a_job_done_before_the_pool_adds_its_callbacks_is_handed_back_by_a_worker(hand_backs, monkeypatch):
    hand_backs.caller_has_result.set()
    wrap_future = asyncio.wrap_future

    def wrap_when_done(future, **kwargs):
        future.result(timeout=10)  # so the slot-freeing callback runs on the event loop
        return wrap_future(future, **kwargs)

    monkeypatch.setattr(asyncio, "wrap_future", wrap_when_done)

    async def one_quick_job():
        pool = worker_pool.BoundedWorkerPool(workers=1, max_queue=2)
        result = await pool.run(str.upper, "text")
        deadline = time.monotonic() + 5  # the event loop passed the hand-back to a worker
        while not hand_backs.threads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        pool.shutdown()
        return result

    assert asyncio.run(one_quick_job()) == "TEXT"
    assert len(hand_backs.threads) == 1
    assert hand_backs.threads[0].startswith(worker_pool.WORKER_THREAD_PREFIX)


# A process that frees 128 MiB of 64 KiB blocks while one block allocated
# after them keeps the heap's top in use, so glibc's automatic trimming (top
# of the heap only) gives nothing back, then calls release_free_memory.
FREED_IN_THE_MIDDLE = f"""
import sys
sys.path.insert(0, {str(PACKAGE.parent)!r})
from asr_service.free_memory import release_free_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

blocks = [bytearray(64 * 1024) for _ in range(2048)]
pin = bytearray(64 * 1024)
del blocks
freed = rss_mib()
release_free_memory()
print(freed, rss_mib())
"""


def test_release_free_memory_gives_glibc_free_pages_back():
    out = subprocess.run([sys.executable, "-c", FREED_IN_THE_MIDDLE],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    freed, released = map(int, out.split())
    assert freed - released >= 100, (freed, released)
