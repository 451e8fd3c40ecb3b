"""Several LoRA adapters on one loaded base model, chosen per request.

PEFT injects each adapter's low-rank weights next to the base layers it adapts
(through transformers' own PEFT integration: load_adapter / set_adapter /
disable_adapters / delete_adapter), so serving another adapter costs a few MB
and no reload of the base. Which adapter is active is state of the whole
model, though: two generations may run at once only if they want the same
adapter (or none). AdapterGate enforces that: a generation enters when the
model is already in the state it wants, or when nothing is running and it can
switch the state; loading and deleting adapters wait for an idle model.
Waiters are served in arrival order, so a stream of requests for one adapter
cannot starve a request for another.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from transformers.utils import logging as transformers_logging

from ..adapters import AdapterInfo
from ..errors import ModelNotFound

log = logging.getLogger(__name__)

# Gate states besides adapter names: the base model alone, a maintenance
# operation in progress, and "unknown" after one (the next user sets it again).
BASE = None
_EXCLUSIVE = object()
_UNKNOWN = object()


class AdapterGate:
    def __init__(self, switch: Callable[[str | None], None]) -> None:
        self._switch = switch
        self._cond = threading.Condition()
        self._state: object = BASE
        self._running = 0
        self._queue: deque[tuple[object, object]] = deque()  # (ticket, wanted state), in arrival order

    @contextmanager
    def use(self, adapter: str | None) -> Iterator[None]:
        """Holds the model in the state `adapter` (None = base) for one generation."""
        self._enter(adapter)
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the model alone, for loading or deleting adapters."""
        self._enter(_EXCLUSIVE)
        try:
            yield
        finally:
            self._leave(then=_UNKNOWN)

    def _enter(self, wanted: object) -> None:
        ticket = object()
        with self._cond:
            self._queue.append((ticket, wanted))
            try:
                self._cond.wait_for(lambda: self._may_enter(ticket, wanted))
                if self._running == 0 and self._state != wanted:
                    self._state = _UNKNOWN
                    if wanted is not _EXCLUSIVE:
                        self._switch(wanted)  # may raise ModelNotFound: then we never entered
                    self._state = wanted
                self._running += 1
            finally:
                self._queue.remove(next(item for item in self._queue if item[0] is ticket))
                self._cond.notify_all()

    def _may_enter(self, ticket: object, wanted: object) -> bool:
        ahead = []
        for queued_ticket, queued_state in self._queue:
            if queued_ticket is ticket:
                break
            ahead.append(queued_state)
        if self._running == 0:
            return not ahead
        # Join the running generations only if they share our state and nobody
        # ahead of us is waiting for a different one.
        same = wanted is not _EXCLUSIVE and self._state == wanted
        return same and all(state == wanted for state in ahead)

    def _leave(self, then: object | None = None) -> None:
        with self._cond:
            self._running -= 1
            if then is not None:
                self._state = then
            self._cond.notify_all()


class AdapterPool:
    """The adapters loaded on `model`, and the gate that switches between them."""

    def __init__(self, model) -> None:
        self._model = model
        # Replaced, never changed in place: the event loop reads it while a
        # thread loads adapters, and must see a whole dict.
        self.loaded: dict[str, AdapterInfo] = {}
        # Adapters that failed to load, so that each version is tried (and logged) once.
        self._failed: dict[str, AdapterInfo] = {}
        self.gate = AdapterGate(self._switch)

    def _switch(self, adapter: str | None) -> None:
        if adapter is BASE:
            if self.loaded:
                self._model.disable_adapters()
            return
        if adapter not in self.loaded:
            raise ModelNotFound(f"adapter {adapter!r} was removed")
        self._model.set_adapter(adapter)
        self._model.enable_adapters()

    def sync(self, wanted: dict[str, AdapterInfo]) -> None:
        """Loads new or changed adapters and drops removed ones (blocking: run it
        in a thread). An adapter that fails to load is logged and left out."""
        stale = [name for name, info in self.loaded.items() if wanted.get(name) != info]
        new = [info for name, info in wanted.items()
               if self.loaded.get(name) != info and self._failed.get(name) != info]
        if not stale and not new:
            return
        with self.gate.exclusive():
            for name in stale:
                self._model.delete_adapter(name)
                self.loaded = {key: info for key, info in self.loaded.items() if key != name}
                log.info("adapter %s unloaded", name)
            for info in new:
                self._load(info)

    def _load(self, info: AdapterInfo) -> None:
        try:
            with _quiet_loading():
                self._model.load_adapter(str(info.path), adapter_name=info.name)
        except Exception as error:  # a broken adapter must not take the service down
            log.warning("adapter %s skipped: PEFT could not load %s (%s)", info.name, info.path, error)
            self._failed[info.name] = info
            if info.name in getattr(self._model, "peft_config", {}):
                self._model.delete_adapter(info.name)
            return
        self.loaded = {**self.loaded, info.name: info}
        log.info("adapter %s loaded from %s (base %s, created %s)", info.name, info.path, info.base_model,
                 info.created)


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Loading a second adapter makes transformers report the first one's
    weights as "MISSING … newly initialized" (they are not: only the new
    adapter's are read) and PEFT warn that the model now has several adapters,
    which is the point. Both would alarm whoever reads the log."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
