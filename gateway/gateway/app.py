"""Builds the FastAPI application."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .clients import ModelClients
from .config import Settings
from .errors import install_handlers
from .limits import BodySizeLimit
from .observability.grpc_metrics import interceptors
from .observability.http_metrics import HttpMetrics
from .observability.metrics import GatewayMetrics
from .openai_compat import routers as openai_routers
from .request_id import RequestId
from .routes import chat, health, metrics, transcribe, transcribe_stream


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gateway_metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.clients = ModelClients.connect(settings, interceptors(gateway_metrics))
        try:
            yield
        finally:
            await app.state.clients.close()

    app = FastAPI(title="Chatbot gateway", version="0.1.0", lifespan=lifespan,
                  description="Public HTTP API: chat with text and images, speech to text.")
    app.state.settings = settings
    app.state.metrics = gateway_metrics
    install_handlers(app)
    for router in (chat.router, transcribe.router, health.router, *openai_routers, metrics.router,
                   transcribe_stream.router):
        app.include_router(router)
    # Each add_middleware wraps the ones before it. From the outside in: metrics
    # see every answer (413s included); the id exists before anything logs; the
    # size check runs before any route reads the body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestId)
    app.add_middleware(HttpMetrics, metrics=gateway_metrics)
    return app
