"""Signing in and out in the browser, and the user's own API keys.

A browser login sets the `chatbot_session` cookie: HttpOnly (scripts cannot
read it), SameSite=Strict (other sites cannot make the browser send it, which
also stops cross-site WebSockets), Secure when the page came over HTTPS.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..accounts import store
from ..accounts.secrets import hash_password, new_token, verify_password
from ..auth import SESSION_COOKIE, PrincipalDep, unauthorized
from ..clients import SettingsDep
from ..db.deps import DbDep, RowId
from ..db.models import User
from ..errors import ApiError, bad_request
from ..quotas import too_many

router = APIRouter(prefix="/api", tags=["users"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("key", min_length=1, max_length=100, description="to tell your keys apart")


class UserOut(BaseModel):
    username: str
    is_admin: bool
    auth: str = Field(description='"on": credentials needed; "off": the single-user mode of GATEWAY_AUTH=off')


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None


class NewKeyOut(KeyOut):
    key: str = Field(description="shown this once: store it now")


def _check_login_rate(request: Request) -> None:
    address = request.client.host if request.client else "unknown"
    wait = request.app.state.login_attempts.take(address)
    if wait:
        raise too_many(f"too many sign-in attempts from this address; retry in {int(wait) + 1} s", wait)


@router.post("/auth/login", response_model=UserOut)
async def login(body: Credentials, request: Request, response: Response, db: DbDep, settings: SettingsDep):
    """Checks the password and sets the session cookie."""
    _check_login_rate(request)
    user = await store.user_by_name(db, body.username)
    # The hash is checked even for an unknown user, so timing does not tell which names exist.
    stored = user.password_hash if user else _dummy_hash()
    if not await asyncio.to_thread(verify_password, body.password, stored) or user is None:
        raise unauthorized("wrong username or password")
    token, expires = await store.open_session(db, user, timedelta(days=settings.session_days))
    response.set_cookie(SESSION_COOKIE, token, expires=expires, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return UserOut(username=user.username, is_admin=user.is_admin, auth=settings.gateway_auth)


@router.post("/auth/logout", status_code=204)
async def logout(request: Request, db: DbDep):
    if (token := request.cookies.get(SESSION_COOKIE)) is not None:
        await store.close_session(db, token)
        request.app.state.credentials.drop(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/auth/me", response_model=UserOut)
async def me(principal: PrincipalDep, settings: SettingsDep):
    """Who the caller is (401 when signed out: the app shows its sign-in form)."""
    return UserOut(username=principal.username, is_admin=principal.is_admin, auth=settings.gateway_auth)


@router.post("/auth/password", status_code=204)
async def change_password(body: PasswordChange, request: Request, principal: PrincipalDep, db: DbDep):
    """Changes the caller's password; every browser session of theirs ends (sign in again)."""
    user = await db.get(User, principal.user_id)
    if not await asyncio.to_thread(verify_password, body.current_password, user.password_hash):
        raise ApiError(403, "the current password is wrong", "forbidden")
    try:
        await store.set_password(db, user, body.new_password)
    except store.AccountError as error:
        raise bad_request(str(error)) from None
    request.app.state.credentials.drop_user(user.id)
    return Response(status_code=204)


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(principal: PrincipalDep, db: DbDep):
    """The caller's API keys (never the keys themselves: only their first characters)."""
    return [KeyOut(id=k.id, name=k.name, prefix=k.prefix, created_at=k.created_at, last_used_at=k.last_used_at)
            for k in await store.list_api_keys(db, principal.user_id)]


@router.post("/keys", status_code=201, response_model=NewKeyOut)
async def create_key(body: KeyRequest, principal: PrincipalDep, db: DbDep):
    """A new API key for the caller, shown once: send it as `Authorization: Bearer <key>`."""
    user = await db.get(User, principal.user_id)
    new = await store.create_api_key(db, user, body.name)
    return NewKeyOut(id=new.id, name=new.name, prefix=new.prefix, created_at=new.created_at, key=new.key)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: RowId, request: Request, principal: PrincipalDep, db: DbDep):
    if not await store.revoke_api_key(db, principal.user_id, key_id):
        raise ApiError(404, f"no key {key_id}", "not_found")
    # The cache knows tokens, not key ids: the user's other credentials are simply checked again.
    request.app.state.credentials.drop_user(principal.user_id)
    return Response(status_code=204)


@functools.cache
def _dummy_hash() -> str:
    """A real hash of a random password: checking an unknown user costs what a real check costs."""
    return hash_password(new_token())
