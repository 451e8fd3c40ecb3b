"""A chat call that names a conversation: the stored history goes to the model
with the new message, and both turns are stored.

Nothing is stored when the model refuses the call before its first token (bad
image, unknown model, busy): the client still has its message and can retry.
Once the answer starts, the user's message and an empty answer ("streaming")
are written in one transaction; the answer's text is saved every few seconds
while it streams and once more at the end, as "complete", "incomplete" (the
client left or the stream broke: what was generated is kept) or "failed".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from chatbot_protos.chat.v1 import chat_pb2
from sqlalchemy.exc import DBAPIError

from ..db.engine import Database
from ..db.models import Conversation, Message
from ..errors import ApiError
from ..storage_errors import storage_failure
from . import store
from .images import ImageStore, sniff_type

log = logging.getLogger(__name__)

_ROLES = {"user": chat_pb2.ROLE_USER, "assistant": chat_pb2.ROLE_ASSISTANT}
FINISH_NAMES = {chat_pb2.FINISH_REASON_STOP: "stop", chat_pb2.FINISH_REASON_LENGTH: "length"}
FLUSH_EVERY_S = 2.0


def not_found(conversation_id: str) -> ApiError:
    return ApiError(404, f"no conversation {conversation_id!r} (it may have been deleted)", "not_found")


def _sendable(message: Message) -> bool:
    return message.status != "failed" and (message.role == "user" or bool(message.content))


def history_of(conversation: Conversation, images: ImageStore, max_messages: int) -> list[chat_pb2.Message]:
    """The stored turns as chat messages, oldest first, at most the last max_messages."""
    messages = [m for m in conversation.messages if _sendable(m)][-max_messages:]
    history = []
    for message in messages:
        turn = chat_pb2.Message(role=_ROLES[message.role], text=message.content)
        for link in message.images:
            data = images.read(link.image_sha256)
            if data is not None:  # a file lost from the volume drops the image, not the conversation
                turn.images.add(data=data, mime_type=link.image.mime_type)
        history.append(turn)
    return history


@dataclass
class Turn:
    """One exchange being stored; the routes feed it the answer as it streams."""

    database: Database
    images: ImageStore
    conversation_id: str
    user_message: chat_pb2.Message
    model: str = ""
    user_message_id: int | None = None
    answer_id: int | None = None
    parts: list[str] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    ended: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def begin(self, model: str) -> None:
        """Writes the user's message (and its images) and an empty answer."""
        self.model = model or self.model
        new_images = []
        for image in self.user_message.images:
            sha = await asyncio.to_thread(self.images.put, image.data)
            new_images.append(store.NewImage(sha, sniff_type(image.data), len(image.data)))
        async with self.database.session() as db:
            conversation = await db.get(Conversation, self.conversation_id)
            if conversation is None:  # deleted while the model was starting
                raise not_found(self.conversation_id)
            self.user_message_id, self.answer_id = await store.begin_turn(
                db, conversation, self.user_message.text, new_images, self.model)

    async def store_whole(self, model: str, text: str, final: chat_pb2.ChatFinal) -> None:
        """Both turns of an answer that came whole (not streamed): two writes, no progress saves."""
        await self.begin(model)
        self.parts = [text]
        await self.end(final)

    async def add(self, delta: str) -> None:
        self.parts.append(delta)
        if self.answer_id is not None and time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.last_flush = time.monotonic()
            try:
                await self._save("streaming")
            except (OSError, DBAPIError) as error:
                if storage_failure(error) is None:
                    raise
                # The answer keeps streaming to the user; the save at the end tries again.
                log.warning("could not save the answer in progress (%s); the stream goes on", error)

    async def end(self, final: chat_pb2.ChatFinal | None, failure: ApiError | None = None) -> None:
        """Stores the answer: complete with a final message, else incomplete (some text) or failed.
        Runs once: the stream stores a complete answer before its last event, the close finds it done."""
        if self.answer_id is None or self.ended:
            return
        try:
            await self._store_end(final, failure)
        except (OSError, DBAPIError) as error:
            if storage_failure(error) is None:
                raise
            # The user has the answer already; the stored one stays "streaming" with what the last save
            # kept, and the next start marks it incomplete (close_abandoned_turns).
            log.error("could not store the end of answer %s: %s", self.answer_id, error)
        # Not set when the write was cancelled (the client left mid-write): the close then tries again.
        self.ended = True

    async def _store_end(self, final: chat_pb2.ChatFinal | None, failure: ApiError | None) -> None:
        if final is not None:
            await self._save("complete", final.prompt_tokens, final.completion_tokens,
                             finish_reason=FINISH_NAMES.get(final.finish_reason, "stop"))
        elif failure is not None and not self.parts:
            await self._save("failed", error=failure.message)
        else:
            await self._save("incomplete", error=failure.message if failure else "the answer was stopped")

    async def _save(self, status: str, prompt_tokens: int = 0, completion_tokens: int = 0,
                    error: str | None = None, finish_reason: str = "") -> None:
        async with self.database.session() as db:
            await store.end_turn(db, self.answer_id, self.text, status, self.model, prompt_tokens,
                                 completion_tokens, error, finish_reason)


async def open_turn(database: Database, images: ImageStore, user_id: int, conversation_id: str,
                    user_message: chat_pb2.Message, max_history: int) -> tuple[chat_pb2.ChatRequest, Turn]:
    """The chat request (history + the new message) and the Turn that will store it; 404 for a
    conversation the user does not have."""
    async with database.session() as db:
        conversation = await store.get(db, user_id, conversation_id, with_messages=True)
        if conversation is None:
            raise not_found(conversation_id)
        history = await asyncio.to_thread(history_of, conversation, images, max_history)
    request = chat_pb2.ChatRequest(messages=[*history, user_message], model=conversation.model)
    return request, Turn(database, images, conversation_id, user_message, conversation.model)
