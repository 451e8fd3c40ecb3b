"""Queries on conversations and messages. Every query takes the user's id:
a conversation of another user is simply not found (404, never 403, so ids
reveal nothing)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from ..db.models import Conversation, Message, MessageImage, StoredImage, utcnow

TITLE_CHARS = 80


@dataclass(frozen=True)
class NewImage:
    sha256: str
    mime_type: str
    size_bytes: int


def title_from(text: str) -> str:
    """A conversation's first title: the start of its first message, on one line."""
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


async def create(db: AsyncSession, user_id: int, title: str = "", model: str = "") -> Conversation:
    conversation = Conversation(id=secrets.token_hex(16), user_id=user_id, title=title.strip()[:200], model=model)
    db.add(conversation)
    await db.commit()
    return conversation


async def page(db: AsyncSession, user_id: int, limit: int, offset: int) -> tuple[list[Conversation], bool]:
    """Newest activity first; returns the page and whether more follow."""
    query = (select(Conversation).where(Conversation.user_id == user_id)
             .order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit + 1).offset(offset))
    rows = list(await db.scalars(query))
    return rows[:limit], len(rows) > limit


async def get(db: AsyncSession, user_id: int, conversation_id: str, with_messages: bool = False) -> Conversation | None:
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    if with_messages:
        query = query.options(selectinload(Conversation.messages))
    return await db.scalar(query)


async def rename(db: AsyncSession, conversation: Conversation, title: str) -> Conversation:
    conversation.title = title.strip()[:200]
    conversation.updated_at = utcnow()
    await db.commit()
    return conversation


async def remove(db: AsyncSession, conversation: Conversation) -> list[str]:
    """Deletes the conversation and its messages; returns the images no message refers to any more."""
    shas = set(await db.scalars(select(MessageImage.image_sha256).join(Message)
                                .where(Message.conversation_id == conversation.id)))
    await db.execute(delete(Conversation).where(Conversation.id == conversation.id))
    return await _forget_orphans(db, shas)


async def truncate(db: AsyncSession, conversation: Conversation, message_id: int) -> list[str] | None:
    """Deletes the message and every later one of the conversation (regenerate, edit and
    resend); None when the conversation has no such message. Returns the orphaned images."""
    in_conversation = (Message.conversation_id == conversation.id)
    if not await db.scalar(select(exists().where(in_conversation, Message.id == message_id))):
        return None
    later = select(Message.id).where(in_conversation, Message.id >= message_id)
    shas = set(await db.scalars(select(MessageImage.image_sha256).where(MessageImage.message_id.in_(later))))
    await db.execute(delete(Message).where(in_conversation, Message.id >= message_id))
    conversation.updated_at = utcnow()
    return await _forget_orphans(db, shas)


async def _forget_orphans(db: AsyncSession, shas: set[str]) -> list[str]:
    """Commits; returns the images of `shas` that no message refers to any more (their rows gone)."""
    orphans = [sha for sha in shas
               if not await db.scalar(select(exists().where(MessageImage.image_sha256 == sha)))]
    if orphans:
        await db.execute(delete(StoredImage).where(StoredImage.sha256.in_(orphans)))
    await db.commit()
    return orphans


async def user_sees_image(db: AsyncSession, user_id: int, sha256: str) -> str | None:
    """The image's MIME type if one of the user's messages refers to it, else None."""
    query = (select(StoredImage.mime_type).join(MessageImage, MessageImage.image_sha256 == StoredImage.sha256)
             .join(Message, Message.id == MessageImage.message_id)
             .join(Conversation, Conversation.id == Message.conversation_id)
             .where(StoredImage.sha256 == sha256, Conversation.user_id == user_id).limit(1))
    return await db.scalar(query)


async def _ensure_images(db: AsyncSession, images: list[NewImage]) -> None:
    known = set(await db.scalars(select(StoredImage.sha256).where(StoredImage.sha256.in_([i.sha256 for i in images]))))
    for image in images:
        if image.sha256 not in known:
            db.add(StoredImage(sha256=image.sha256, mime_type=image.mime_type, size_bytes=image.size_bytes))
            known.add(image.sha256)


async def begin_turn(db: AsyncSession, conversation: Conversation, text: str, images: list[NewImage],
                     model: str) -> tuple[int, int]:
    """Stores the user's message and an empty assistant message ("streaming")
    in one transaction; returns both ids (user's, assistant's)."""
    now = utcnow()
    await _ensure_images(db, images)
    user = Message(conversation_id=conversation.id, role="user", content=text, created_at=now)
    user.images = [MessageImage(position=i, image_sha256=image.sha256) for i, image in enumerate(images)]
    answer = Message(conversation_id=conversation.id, role="assistant", status="streaming", model=model,
                     created_at=now)
    db.add_all([user, answer])
    conversation.updated_at = now
    if not conversation.title:
        conversation.title = title_from(text) or "Imagen"
    await db.commit()
    return user.id, answer.id


async def end_turn(db: AsyncSession, message_id: int, content: str, status: str, model: str = "",
                   prompt_tokens: int = 0, completion_tokens: int = 0, error: str | None = None,
                   finish_reason: str = "") -> None:
    values = dict(content=content, status=status, prompt_tokens=prompt_tokens,
                  completion_tokens=completion_tokens, error=error, finish_reason=finish_reason)
    if model:
        values["model"] = model
    await db.execute(update(Message).where(Message.id == message_id).values(**values))
    await db.commit()


async def close_abandoned_turns(db: AsyncSession, started_before: datetime) -> int:
    """Answers left "streaming" by a gateway that stopped mid-answer become
    "incomplete" (their text so far is kept; the flush interval bounds the loss)."""
    result = await db.execute(update(Message).where(Message.status == "streaming",
                                                    Message.created_at < started_before)
                              .values(status="incomplete", error="the gateway stopped during this answer"))
    await db.commit()
    return result.rowcount
