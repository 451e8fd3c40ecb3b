"""Builds the FastAPI application."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .accounts import store as accounts
from .accounts.cache import CredentialCache
from .auth import Principal
from .clients import ModelClients
from .config import Settings
from .conversations import store as conversations
from .conversations.images import ImageStore
from .db.engine import Database, redacted
from .db.models import utcnow
from .errors import install_handlers
from .limits import BodySizeLimit
from .observability.grpc_metrics import interceptors
from .observability.http_metrics import HttpMetrics
from .observability.metrics import GatewayMetrics
from .openai_compat import routers as openai_routers
from .quotas import TokenBuckets, UserQuotas
from .request_id import RequestId
from .storage_errors import install_storage_handlers
from .routes import auth, chat, conversations as conversation_routes, health, metrics, transcribe, transcribe_stream

log = logging.getLogger(__name__)


async def open_storage(app: FastAPI, settings: Settings) -> Database:
    """Migrates the database, closes answers a stopped gateway left streaming,
    and in single-user mode finds (or creates) the local user."""
    database = Database(settings.database)
    try:
        await database.migrate()
    except Exception as error:
        log.error("cannot open the database %s: %s", redacted(settings.database), error)
        raise
    async with database.session() as db:
        # No stream outlives the chat deadline, so older "streaming" rows were left by a gateway that stopped.
        cutoff = utcnow() - timedelta(seconds=settings.chat_timeout_s + 60)
        if closed := await conversations.close_abandoned_turns(db, cutoff):
            log.warning("marked %d answers left unfinished by a stopped gateway as incomplete", closed)
        if settings.gateway_auth == "off":
            app.state.local_principal = Principal.of(await accounts.local_user(db), "local")
            log.warning("GATEWAY_AUTH=off: every caller is the local user (the gateway listens on %s only)",
                        settings.gateway_host)
        elif not await accounts.count_users(db):
            log.warning("no users yet: create one with `python -m gateway.admin create-user NAME --admin`")
    return database


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gateway_metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.database = await open_storage(app, settings)
        app.state.clients = ModelClients.connect(settings, interceptors(gateway_metrics))
        try:
            yield
        finally:
            await app.state.clients.close()
            await app.state.database.close()

    # FastAPI's own OpenTelemetry hooks off: the gateway exports Prometheus
    # metrics itself, and the hooks cost a check of the providers per request.
    app = FastAPI(title="Chatbot gateway", version="0.2.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="Public HTTP API: chat with text and images, speech to text, conversations, "
                              "an OpenAI-compatible /v1.")
    app.state.settings = settings
    app.state.metrics = gateway_metrics
    app.state.images = ImageStore(settings.images_dir)
    app.state.quotas = UserQuotas(settings.rate_limit_per_minute, settings.max_streams_per_user)
    gateway_metrics.open_streams.set_function(lambda: sum(app.state.quotas.open_streams.values()))
    app.state.login_attempts = TokenBuckets(settings.login_attempts_per_minute)
    app.state.credentials = CredentialCache(settings.auth_cache_s)
    install_handlers(app)
    install_storage_handlers(app)
    for router in (chat.router, transcribe.router, health.router, *openai_routers, metrics.router,
                   transcribe_stream.router, auth.router, conversation_routes.router):
        app.include_router(router)
    # Each add_middleware wraps the ones before it. From the outside in: metrics
    # see every answer (413s included); the id exists before anything logs; CORS
    # answers preflights before anything else runs; the size check runs before
    # any route reads the body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    if settings.allowed_origins:
        # Credentials (cookies) stay same-origin: other sites' pages call with API keys.
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["Retry-After", "X-Request-ID"], max_age=600)
    app.add_middleware(RequestId)
    app.add_middleware(HttpMetrics, metrics=gateway_metrics)
    return app
