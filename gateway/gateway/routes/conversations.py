"""Conversations of the signed-in user: create, list (newest first, paged),
read with their messages, rename, delete; and the images their messages hold.

Another user's conversation or image is 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from ..auth import PrincipalDep
from ..conversations import store
from ..conversations.turns import not_found
from ..db.deps import DbDep, ImagesDep, RowId
from ..db.models import Conversation, Message
from ..errors import ApiError

router = APIRouter(prefix="/api", tags=["conversations"])


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("", max_length=200, description="empty: the start of the first message")
    model: str = Field("", max_length=200, description="model or adapter name; empty: the service default")


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)


class ConversationOut(BaseModel):
    id: str
    title: str
    model: str
    created_at: datetime
    updated_at: datetime


class ImageOut(BaseModel):
    sha256: str
    mime_type: str
    url: str


class MessageOut(BaseModel):
    id: int
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "streaming", "incomplete", "failed"]
    model: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    finish_reason: Literal["", "stop", "length"] = Field(description='"" until the answer is complete')
    created_at: datetime
    images: list[ImageOut]


class ConversationWithMessages(ConversationOut):
    messages: list[MessageOut]


class ConversationPage(BaseModel):
    conversations: list[ConversationOut]
    next_offset: int | None = Field(description="pass as offset for the next page; null on the last one")


def conversation_out(conversation: Conversation) -> ConversationOut:
    return ConversationOut(id=conversation.id, title=conversation.title, model=conversation.model,
                           created_at=conversation.created_at, updated_at=conversation.updated_at)


def message_out(message: Message) -> MessageOut:
    images = [ImageOut(sha256=link.image_sha256, mime_type=link.image.mime_type,
                       url=f"/api/images/{link.image_sha256}") for link in message.images]
    return MessageOut(id=message.id, role=message.role, content=message.content, status=message.status,
                      model=message.model, prompt_tokens=message.prompt_tokens,
                      completion_tokens=message.completion_tokens, error=message.error,
                      finish_reason=message.finish_reason,
                      created_at=message.created_at, images=images)


@router.post("/conversations", status_code=201, response_model=ConversationOut)
async def create_conversation(body: NewConversation, principal: PrincipalDep, db: DbDep):
    return conversation_out(await store.create(db, principal.user_id, body.title, body.model.strip()))


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(principal: PrincipalDep, db: DbDep, limit: int = Query(20, ge=1, le=100),
                             offset: int = Query(0, ge=0)):
    rows, more = await store.page(db, principal.user_id, limit, offset)
    return ConversationPage(conversations=[conversation_out(c) for c in rows],
                            next_offset=offset + len(rows) if more else None)


@router.get("/conversations/{conversation_id}", response_model=ConversationWithMessages)
async def get_conversation(conversation_id: str, principal: PrincipalDep, db: DbDep):
    conversation = await store.get(db, principal.user_id, conversation_id, with_messages=True)
    if conversation is None:
        raise not_found(conversation_id)
    return ConversationWithMessages(**conversation_out(conversation).model_dump(),
                                    messages=[message_out(m) for m in conversation.messages])


@router.patch("/conversations/{conversation_id}", response_model=ConversationOut)
async def rename_conversation(conversation_id: str, body: ConversationPatch, principal: PrincipalDep, db: DbDep):
    conversation = await store.get(db, principal.user_id, conversation_id)
    if conversation is None:
        raise not_found(conversation_id)
    return conversation_out(await store.rename(db, conversation, body.title))


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, principal: PrincipalDep, db: DbDep, images: ImagesDep):
    conversation = await store.get(db, principal.user_id, conversation_id)
    if conversation is None:
        raise not_found(conversation_id)
    for sha in await store.remove(db, conversation):
        await asyncio.to_thread(images.delete, sha)
    return Response(status_code=204)


@router.delete("/conversations/{conversation_id}/messages/{message_id}", status_code=204)
async def truncate_conversation(conversation_id: str, message_id: RowId, principal: PrincipalDep, db: DbDep,
                                images: ImagesDep):
    """Deletes this message and every later one: what regenerate and edit-and-resend do
    before sending the turn again, so the model's history holds only the new version."""
    conversation = await store.get(db, principal.user_id, conversation_id)
    if conversation is None:
        raise not_found(conversation_id)
    orphans = await store.truncate(db, conversation, message_id)
    if orphans is None:
        raise ApiError(404, f"no message {message_id} in this conversation", "not_found")
    for sha in orphans:
        await asyncio.to_thread(images.delete, sha)
    return Response(status_code=204)


@router.get("/images/{sha256}", response_class=Response,
            responses={200: {"content": {"image/*": {}}, "description": "the image's bytes"}})
async def get_image(sha256: str, principal: PrincipalDep, db: DbDep, images: ImagesDep):
    mime = await store.user_sees_image(db, principal.user_id, sha256.lower())
    data = await asyncio.to_thread(images.read, sha256.lower()) if mime else None
    if data is None:
        raise ApiError(404, "no such image", "not_found")
    # Content-addressed: the bytes behind this URL never change.
    return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=31536000, immutable",
                                                    "X-Content-Type-Options": "nosniff"})
