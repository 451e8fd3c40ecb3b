"""FastAPI dependencies for the database and the image store (overridable in tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..conversations.images import ImageStore


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.database.session() as session:
        yield session


async def get_images(request: Request) -> ImageStore:
    return request.app.state.images


DbDep = Annotated[AsyncSession, Depends(get_db)]
ImagesDep = Annotated[ImageStore, Depends(get_images)]
