"""The interface every chat backend implements, and the registry that picks one."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..config import Settings
from ..domain import ChatFinal, ChatRequest

# A stream yields text deltas, then exactly one ChatFinal.
StreamEvent = str | ChatFinal


@dataclass(frozen=True)
class ModelDescription:
    name: str
    backend: str
    vision: bool
    max_images_per_message: int
    context_length: int = 0
    base_model: str = ""


class ChatBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Loads or connects to the model; returns once requests can be served."""

    async def close(self) -> None:
        """Releases connections and memory."""

    def models(self) -> list[ModelDescription]:
        """What this backend serves (the configured model first)."""

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Generates the answer. Closing the iterator early (the caller went away)
        must stop generation."""


# Module and class per backend, imported only when chosen: the ollama backend
# must not pay for importing torch.
_REGISTRY = {
    "transformers": ("vision_chat_service.backends.transformers_backend", "TransformersBackend"),
    "ollama": ("vision_chat_service.backends.ollama", "OllamaBackend"),
    "openai": ("vision_chat_service.backends.openai", "OpenAIBackend"),
}


def create_backend(settings: Settings) -> ChatBackend:
    module_name, class_name = _REGISTRY[settings.chat_backend]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(settings)
