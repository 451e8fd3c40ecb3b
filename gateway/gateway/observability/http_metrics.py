"""Counts every HTTP request by route template and status, times it, and names
the error type of error responses.

A pure ASGI middleware (no buffering): the response goes out chunk by chunk as
before, and only the first few KiB of an error body are copied to read its
type. Labels use the route's template (`/v1/models/{model}`), never the raw
path, so that the number of series stays bounded; paths no route matches, and
requests refused before routing (a body over the size limit), are `unmatched`.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import GatewayMetrics

# Operators scrape /metrics; counting the scrapes would only add noise.
_NOT_COUNTED = frozenset({"/metrics"})
_ERROR_BODY_LIMIT = 16 * 1024
UNMATCHED = "unmatched"


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NOT_COUNTED:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        self.metrics.in_progress.inc()
        started = time.perf_counter()
        status: int | None = None
        error_body: bytearray | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", ()))
                if status >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    error_body = bytearray()
            elif message["type"] == "http.response.body" and error_body is not None:
                error_body += message.get("body", b"")[: _ERROR_BODY_LIMIT - len(error_body)]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except asyncio.CancelledError:
            status = status or 499  # the client went away before an answer
            raise
        except Exception:
            status = status or 500
            raise
        finally:
            route = route_template(scope)
            status_label = str(status or 500)
            self.metrics.requests.labels(method, route, status_label).inc()
            self.metrics.request_seconds.labels(method, route, status_label).observe(time.perf_counter() - started)
            if status is not None and status >= 400:
                self.metrics.errors.labels(error_type(error_body, status), status_label).inc()
            # Last, so that "nothing in progress" means every count above is in.
            self.metrics.in_progress.dec()


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (the router records it in the scope)."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED


def error_type(body: bytearray | None, status: int) -> str:
    """The body's `error_type` (/api) or `error.code` (/v1); `http_<status>` if neither."""
    try:
        decoded = json.loads(bytes(body)) if body else None
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        if isinstance(decoded.get("error_type"), str):
            return decoded["error_type"]
        nested = decoded.get("error")
        if isinstance(nested, dict) and isinstance(nested.get("code"), str):
            return nested["code"]
    return f"http_{status}"
