"""Queries on users, API keys and browser sessions."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import ApiKey, BrowserSession, User, utcnow
from .secrets import hash_password, new_api_key, new_token, token_hash

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LOCAL_USERNAME = "local"  # the one user of GATEWAY_AUTH=off


class AccountError(ValueError):
    """A request about accounts that cannot be met (the message says why)."""


@dataclass(frozen=True)
class NewKey:
    """A key as it is created: `key` is shown this once and never stored."""

    id: int
    name: str
    prefix: str
    key: str
    created_at: datetime


async def create_user(db: AsyncSession, username: str, password: str | None, is_admin: bool = False) -> User:
    if not USERNAME.match(username):
        raise AccountError("a username has 1-64 letters, digits or _ . @ -")
    if password is not None and len(password) < 8:
        raise AccountError("a password has at least 8 characters")
    password_hash = await asyncio.to_thread(hash_password, password) if password else None
    user = User(username=username, password_hash=password_hash, is_admin=is_admin)
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise AccountError(f"the user {username} exists already") from None
    return user


async def user_by_name(db: AsyncSession, username: str) -> User | None:
    return await db.scalar(select(User).where(User.username == username))


async def count_users(db: AsyncSession, with_password: bool = False) -> int:
    query = select(func.count()).select_from(User)
    if with_password:
        query = query.where(User.password_hash.is_not(None))
    return await db.scalar(query) or 0


async def list_users(db: AsyncSession) -> list[User]:
    return list(await db.scalars(select(User).order_by(User.id)))


async def local_user(db: AsyncSession) -> User:
    """The single user of GATEWAY_AUTH=off, created on first use."""
    user = await user_by_name(db, LOCAL_USERNAME)
    if user is None:
        try:
            user = await create_user(db, LOCAL_USERNAME, None, is_admin=True)
        except AccountError:  # another request created it meanwhile
            user = await user_by_name(db, LOCAL_USERNAME)
    return user


async def create_api_key(db: AsyncSession, user: User, name: str) -> NewKey:
    key = new_api_key()
    row = ApiKey(user_id=user.id, name=name.strip()[:100] or "key", prefix=key[:12], key_hash=token_hash(key))
    db.add(row)
    await db.commit()
    return NewKey(row.id, row.name, row.prefix, key, row.created_at)


async def list_api_keys(db: AsyncSession, user_id: int) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
    return list(await db.scalars(query))


async def revoke_api_key(db: AsyncSession, user_id: int, key_id: int) -> bool:
    result = await db.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id,
                                                   ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
    await db.commit()
    return result.rowcount > 0


async def user_by_api_key(db: AsyncSession, key: str) -> User | None:
    row = await db.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    # Written at most once a minute per key: a busy client must not turn every read into a write.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
        await db.commit()
    return await db.get(User, row.user_id)


async def open_session(db: AsyncSession, user: User, lifetime: timedelta) -> tuple[str, datetime]:
    token = new_token()
    expires = utcnow() + lifetime
    db.add(BrowserSession(user_id=user.id, token_hash=token_hash(token), expires_at=expires))
    # Expired sessions of anyone are dropped here, so the table does not grow forever.
    await db.execute(delete(BrowserSession).where(BrowserSession.expires_at < utcnow()))
    await db.commit()
    return token, expires


async def user_by_session(db: AsyncSession, token: str) -> User | None:
    row = await db.scalar(select(BrowserSession).where(BrowserSession.token_hash == token_hash(token)))
    if row is None or row.expires_at < utcnow():
        return None
    return await db.get(User, row.user_id)


async def close_session(db: AsyncSession, token: str) -> None:
    await db.execute(delete(BrowserSession).where(BrowserSession.token_hash == token_hash(token)))
    await db.commit()


async def set_password(db: AsyncSession, user: User, password: str) -> None:
    if len(password) < 8:
        raise AccountError("a password has at least 8 characters")
    user.password_hash = await asyncio.to_thread(hash_password, password)
    # A new password ends every browser session of the user.
    await db.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id))
    await db.commit()
