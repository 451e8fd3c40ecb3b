"""Server-Sent Events decoding, for the streams of OpenAI-compatible servers.

Format (https://html.spec.whatwg.org/multipage/server-sent-events.html):
`field: value` lines; a blank line ends an event; `data` lines of one event
are joined with newlines; lines that start with `:` are comments (keep-alives,
such as the gateway's `: keep-alive`). The caller hands in *lines*: httpx's
`aiter_lines()` already keeps the partial line at the end of each network
chunk until the rest arrives, so a JSON object split across TCP packets is
never seen in halves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    data: str
    # "message" unless the server named the event. llama.cpp's server writes a
    # failure as an `error: {...}` line instead of `data:`; it arrives here as
    # an event named "error".
    event: str = "message"


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """The events of a stream of lines (line endings already removed)."""
    data: list[str] = []
    event = "message"
    async for line in lines:
        if not line:
            if data:
                yield SSEEvent("\n".join(data), event)
            data, event = [], "message"
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")  # the spec drops exactly one leading space
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "error":
            data, event = [value], "error"
        # id and retry only matter to browsers that reconnect; other fields are ignored per the spec.
    if data:
        # A server that ends without the final blank line still meant this event.
        yield SSEEvent("\n".join(data), event)
