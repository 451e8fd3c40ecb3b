"""Builds the FastAPI application."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .clients import ModelClients
from .config import Settings
from .errors import install_handlers
from .limits import BodySizeLimit
from .request_id import RequestId
from .routes import chat, health, transcribe


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.clients = ModelClients.connect(settings)
        try:
            yield
        finally:
            await app.state.clients.close()

    app = FastAPI(title="Chatbot gateway", version="0.1.0", lifespan=lifespan,
                  description="Public HTTP API: chat with text and images, speech to text.")
    app.state.settings = settings
    install_handlers(app)
    for router in (chat.router, transcribe.router, health.router):
        app.include_router(router)
    # Outermost first: the id exists before anything logs; the size check runs
    # before any route reads the body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestId)
    return app
