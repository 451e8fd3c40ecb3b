"""Liveness and readiness for orchestrators and the operator."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..clients import ClientsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The gateway process is alive (says nothing about the models)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(clients: ClientsDep) -> JSONResponse:
    """200 only when every model service reports SERVING; the body lists each one."""
    states = await clients.health()
    ready = all(state == "SERVING" for state in states.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "dependencies": states},
                        status_code=200 if ready else 503)
