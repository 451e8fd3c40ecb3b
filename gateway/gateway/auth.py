"""Who is calling: the seam where issue 5's users and API keys will plug in.

Today there is no authentication: every caller is the one local user. Routers
that will need a user depend on `current_principal` already, so adding API
keys or sessions changes this module only (and tests can override it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request


@dataclass(frozen=True)
class Principal:
    """The caller. `user_id` is None in the single-user mode of today."""

    user_id: str | None = None


LOCAL_USER = Principal()


async def current_principal(request: Request) -> Principal:
    # Later: read `Authorization: Bearer <key>` (the OpenAI SDKs send it) or the
    # session cookie, and raise ApiError(401, ..., "unauthorized") when missing.
    return LOCAL_USER


PrincipalDep = Annotated[Principal, Depends(current_principal)]
