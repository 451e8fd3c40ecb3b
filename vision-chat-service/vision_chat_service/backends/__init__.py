"""Chat backends behind one narrow interface, chosen by CHAT_BACKEND."""

from .base import ChatBackend, ModelDescription, StreamEvent, create_backend

__all__ = ["ChatBackend", "ModelDescription", "StreamEvent", "create_backend"]
