"""Cuts streamed text at the first stop string, without ever sending part of one.

Text is streamed in pieces, and a stop string may arrive split across two of
them; so the tail that could still become a stop string is held back until the
next piece shows whether it does.
"""

from __future__ import annotations


class StopStringFilter:
    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text that is safe to send now."""
        if self.stopped:
            return ""
        self._pending += text
        cut = min((i for i in (self._pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        if self._hold == 0:
            out, self._pending = self._pending, ""
            return out
        out, self._pending = self._pending[: -self._hold], self._pending[-self._hold:]
        return out

    def flush(self) -> str:
        """The held-back tail, once the stream has ended without a stop string."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out
