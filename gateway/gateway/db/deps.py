"""FastAPI dependencies for the database and the image store (overridable in tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..conversations.images import ImageStore


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.database.session() as session:
        yield session


async def get_images(request: Request) -> ImageStore:
    return request.app.state.images


DbDep = Annotated[AsyncSession, Depends(get_db)]
ImagesDep = Annotated[ImageStore, Depends(get_images)]


# An integer row id in a URL. The bound is the database's BIGINT: a larger number
# reached the driver and came back as a 500 (schemathesis found
# DELETE /api/keys/175930482062719647744, tests/hostile/test_fuzz.py); now it is a 400.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
