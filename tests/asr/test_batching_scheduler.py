"""The batch scheduler (asr_service/batching.py) on its own, with a fake model.

What the service tests (test_batching.py) cannot pin down without timing
luck: batches are capped at the batch size and mix only chunks of equal
options, a lone request runs at once and chunks wait for a request still
being prepared no longer than the window, chunks are taken
round-robin across requests, a cancelled request's waiting chunks never
reach the model while the rest of its batch is unaffected, and a failing
batch fails only the requests that had chunks in it. The runner here records
what it was given instead of running Whisper, so these take milliseconds.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from tests.asr.service_code import service_module


batching = service_module("batching")


class Recorder:
    """A runner that returns each payload doubled and remembers each batch.

    ``gate`` (when set) holds every batch until released, so a test can queue
    work behind a running batch deterministically.
    """

    def __init__(self, gate: threading.Event | None = None, fail_on: object = None) -> None:
        self.batches: list[tuple[object, list[object]]] = []
        self.gate = gate
        self.fail_on = fail_on
        self.started = threading.Event()

    def __call__(self, key, items):
        payloads = [payload for _ticket, payload in items]
        self.batches.append((key, payloads))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_on in payloads:
            raise RuntimeError("model failed")
        return [payload * 2 for payload in payloads]


@pytest.fixture
def make():
    made = []

    def make(runner, batch_size=4, window=0.05, workers=1):
        batcher = batching.ChunkBatcher(runner, batch_size, window, workers)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


def test_concurrent_requests_share_one_batch_and_get_their_own_results(make):
    recorder = Recorder()
    batcher = make(recorder, batch_size=4, window=0.5)
    # As the service does while requests are still being prepared: a lone
    # waiting request would otherwise run at once if this thread were slow.
    with batcher.incoming():
        first = batcher.submit("es", [1, 2])
        second = batcher.submit("es", [10, 20])  # full: 4 chunks, no need to wait the window
    assert first.result(5) == [2, 4]
    assert second.result(5) == [20, 40]
    assert len(recorder.batches) == 1
    assert sorted(recorder.batches[0][1]) == [1, 2, 10, 20]
    assert first.largest_batch == second.largest_batch == 4
    assert batcher.stats() == {4: 1}


def test_batches_are_capped_and_one_long_request_is_spread_over_several(make):
    recorder = Recorder()
    batcher = make(recorder, batch_size=3, window=0.01)
    ticket = batcher.submit("es", list(range(7)))
    assert ticket.result(5) == [2 * n for n in range(7)]
    assert [len(payloads) for _, payloads in recorder.batches] == [3, 3, 1]
    # The chunks of one request are decoded in order.
    assert [n for _, payloads in recorder.batches for n in payloads] == list(range(7))


def test_only_chunks_with_equal_options_are_batched_together(make):
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = make(recorder, batch_size=8, window=0.01)
    blocker = batcher.submit("es", [0])
    assert recorder.started.wait(5)  # the only batcher thread is busy
    spanish = batcher.submit("es", [1, 2])
    english = batcher.submit("en", [3])
    more_spanish = batcher.submit("es", [4])
    gate.set()
    for ticket in (blocker, spanish, english, more_spanish):
        ticket.result(5)
    assert [(key, sorted(payloads)) for key, payloads in recorder.batches] == [
        ("es", [0]), ("es", [1, 2, 4]), ("en", [3])]


def test_a_lone_request_runs_at_once_and_waits_for_one_on_its_way_at_most_the_window(make):
    batcher = make(Recorder(), batch_size=8, window=0.3)
    started = time.monotonic()
    assert batcher.submit("es", [1]).result(5) == [2]
    assert time.monotonic() - started < 0.15  # nobody else coming: no window to pay

    with batcher.incoming():  # another request is being decoded and VAD-cut
        started = time.monotonic()
        ticket = batcher.submit("es", [1])
        assert ticket.result(5) == [2]  # it waited, but not past the window
        waited = time.monotonic() - started
    assert 0.25 <= waited < 2.0, waited


def test_a_request_on_its_way_joins_the_waiting_chunks(make):
    recorder = Recorder()
    batcher = make(recorder, batch_size=8, window=5.0)
    results = {}
    on_its_way = threading.Event()

    def second() -> None:
        with batcher.incoming():  # as the engine does: preparing and submitting, not waiting
            on_its_way.set()
            time.sleep(0.2)  # preparing
            ticket = batcher.submit("es", [2])
        results["second"] = ticket.result(5)

    with batcher.incoming():
        thread = threading.Thread(target=second)
        thread.start()
        assert on_its_way.wait(5)
        first = batcher.submit("es", [1])
    # Once nobody else is on its way the batch runs, long before the 5 s window.
    assert first.result(3) == [2]
    thread.join(5)
    assert results["second"] == [4]
    assert [sorted(payloads) for _, payloads in recorder.batches] == [[1, 2]]


def test_chunks_are_taken_round_robin_across_requests(make):
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = make(recorder, batch_size=4, window=0.01)
    blocker = batcher.submit("es", [0])
    assert recorder.started.wait(5)
    long = batcher.submit("es", [100, 101, 102, 103, 104, 105])
    short = batcher.submit("es", [7])
    gate.set()
    assert short.result(5) == [14]
    long.result(5), blocker.result(5)
    # The short request rides in the first batch after the blocker, not after
    # all of the long recording's chunks.
    assert 7 in recorder.batches[1][1]


def test_a_cancelled_request_is_dropped_and_the_others_in_its_batch_finish(make):
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = make(recorder, batch_size=4, window=0.01)
    running = batcher.submit("es", [1, 2])
    assert recorder.started.wait(5)
    waiting = batcher.submit("es", [3, 4, 5])
    staying = batcher.submit("es", [6])

    waiting.cancel()
    with pytest.raises(CancelledError):  # the wait ends at once, not after the batch
        waiting.result(0.5)
    running.cancel()  # already inside the running batch: its result is dropped
    gate.set()

    assert staying.result(5) == [12]
    with pytest.raises(CancelledError):
        running.result(5)
    decoded = [n for _, payloads in recorder.batches for n in payloads]
    assert not {3, 4, 5} & set(decoded), decoded  # never reached the model
    # The batcher keeps working afterwards.
    assert batcher.submit("es", [9]).result(5) == [18]


def test_a_failing_batch_fails_only_its_own_requests(make):
    gate = threading.Event()
    recorder = Recorder(gate, fail_on=13)
    batcher = make(recorder, batch_size=2, window=0.01)
    first = batcher.submit("es", [13, 1])
    assert recorder.started.wait(5)
    second = batcher.submit("en", [2])
    gate.set()
    with pytest.raises(RuntimeError, match="model failed"):
        first.result(5)
    assert second.result(5) == [4]


def test_an_empty_request_needs_no_batch(make):
    recorder = Recorder()
    ticket = make(recorder).submit("es", [])
    assert ticket.result(0) == [] and ticket.largest_batch == 0
    assert recorder.batches == []
