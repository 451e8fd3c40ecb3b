"""Refuses oversized request bodies before they are read (413).

A declared Content-Length over the limit is refused at once; a body without
one (chunked) is counted as it arrives and cut off as soon as it passes the
limit, so an upload never fills memory or disk first.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(BaseException):
    """Raised from `receive` when the body passes the limit.

    A BaseException, not an Exception: FastAPI reads the body inside
    `except Exception` and turns anything raised there into a 400 "There was an
    error parsing the body", so a chunked upload over the limit was answered 400
    instead of 413 (found by tests/hostile/test_corpus.py). This way it passes
    every `except Exception` up to BodySizeLimit, which answers 413.
    """


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        limit_mb = self.max_bytes // (1024 * 1024)
        body = json.dumps({"error": f"upload too large: the limit is {limit_mb} MB",
                           "error_type": "payload_too_large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
