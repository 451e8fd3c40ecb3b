"""Reads Server-Sent Events from an httpx streaming response, as a browser would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx


def read_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """Yields (event name, decoded data) per event; comment lines are skipped."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].lstrip())
