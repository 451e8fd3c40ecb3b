"""Recently checked credentials, kept in memory for a few seconds.

Checking a key or session costs a database round trip (3-4 ms on SQLite,
more on a remote PostgreSQL), which would be most of what the gateway adds
to a request. Entries live `ttl_s` seconds; revoking a key, signing out or
changing a password on this gateway drops the user's entries at once. Other
gateway replicas notice within `ttl_s` (AUTH_CACHE_S; 0 turns the cache off).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

from .secrets import token_hash

T = TypeVar("T")


class CredentialCache(Generic[T]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000, clock=time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.entries: OrderedDict[str, tuple[float, int, T]] = OrderedDict()  # hash → (expiry, user id, value)

    def get(self, token: str) -> T | None:
        if self.ttl_s <= 0:
            return None
        key = token_hash(token)
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] < self.clock():
            del self.entries[key]
            return None
        return entry[2]

    def put(self, token: str, user_id: int, value: T) -> None:
        if self.ttl_s <= 0:
            return
        self.entries[token_hash(token)] = (self.clock() + self.ttl_s, user_id, value)
        self.entries.move_to_end(token_hash(token))
        while len(self.entries) > self.max_entries:  # the oldest first: memory stays bounded
            self.entries.popitem(last=False)

    def drop(self, token: str) -> None:
        self.entries.pop(token_hash(token), None)

    def drop_user(self, user_id: int) -> None:
        for key in [k for k, (_, owner, _) in self.entries.items() if owner == user_id]:
            del self.entries[key]
