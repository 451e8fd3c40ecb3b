"""Who is calling.

Every route that touches models or data depends on `current_principal`:
- `Authorization: Bearer <API key>` (what the OpenAI SDKs send), or
- the `chatbot_session` cookie of a browser login (routes/auth.py), or
- with GATEWAY_AUTH=off (loopback only, checked in config.py), the one local user.
A caller with none of them gets 401. Tests can override the dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.requests import HTTPConnection

from .accounts import store
from .db.models import User
from .errors import ApiError

SESSION_COOKIE = "chatbot_session"


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    is_admin: bool = False
    via: str = "local"  # "api_key" | "session" | "local"

    @classmethod
    def of(cls, user: User, via: str) -> "Principal":
        return cls(user.id, user.username, user.is_admin, via)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def bearer_token(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def principal_of(connection: HTTPConnection) -> Principal:
    """For HTTP requests and WebSockets alike."""
    app = connection.app
    if app.state.settings.gateway_auth == "off":
        return app.state.local_principal
    if (key := bearer_token(connection)) is not None:
        return await _checked(app, key, "api_key", store.user_by_api_key,
                              "the API key is not valid (revoked, mistyped or from another server)")
    if (token := connection.cookies.get(SESSION_COOKIE)) is not None:
        return await _checked(app, token, "session", store.user_by_session, "your session has ended: sign in again")
    raise unauthorized("sign in, or send an API key: Authorization: Bearer <key>")


async def _checked(app, token: str, via: str, lookup, refusal: str) -> Principal:
    """The principal of a key or session token, from the cache or the database."""
    cache = app.state.credentials
    if (principal := cache.get(token)) is not None:
        return principal
    async with app.state.database.session() as db:
        user = await lookup(db, token)
    if user is None:
        raise unauthorized(refusal)
    principal = Principal.of(user, via)
    cache.put(token, user.id, principal)
    return principal


async def current_principal(request: Request) -> Principal:
    principal = await principal_of(request)
    request.state.principal = principal  # for the logs and the per-user limits
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "only an administrator may do this", "forbidden")
    return principal


AdminDep = Annotated[Principal, Depends(admin_principal)]
