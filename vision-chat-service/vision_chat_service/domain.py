"""Chat types the backends work with, and their conversion from and to protobuf.

Servicers convert at the edge so that backends never see protobuf objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from chatbot_protos.chat.v1 import chat_pb2

from .errors import InvalidRequest
from .images import validate_image


class Role(str, Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


_ROLE_FROM_PB = {
    chat_pb2.ROLE_SYSTEM: Role.SYSTEM,
    chat_pb2.ROLE_USER: Role.USER,
    chat_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
}


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    text: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    options: GenerationOptions = field(default_factory=GenerationOptions)
    model: str = ""
    adapter: str = ""

    @property
    def image_count(self) -> int:
        return sum(len(m.images) for m in self.messages)


@dataclass(frozen=True)
class ChatFinal:
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float
    total_seconds: float
    # Tokens per second after the first token, as the backend measured it
    # (per token in the worker, or Ollama's eval_duration); None = estimate it.
    measured_tokens_per_second: float | None = None

    @property
    def tokens_per_second(self) -> float:
        """Generation speed once the first token is out: prompt processing (which
        grows with images and history) is measured by time_to_first_token instead."""
        if self.measured_tokens_per_second is not None:
            return self.measured_tokens_per_second
        # From the first text, which may trail the first token by a word.
        decoding = self.total_seconds - self.time_to_first_token
        if self.completion_tokens < 2 or decoding <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decoding


def with_system_prompt(request: ChatRequest, system_prompt: str) -> ChatRequest:
    """Puts the service's default system prompt first when the caller sent no
    system message of its own (a caller's system message always wins)."""
    if not system_prompt.strip() or any(m.role is Role.SYSTEM for m in request.messages):
        return request
    return replace(request, messages=(ChatMessage(Role.SYSTEM, system_prompt),) + request.messages)


def request_from_pb(request: chat_pb2.ChatRequest) -> ChatRequest:
    """Validates and converts a ChatRequest; raises InvalidRequest naming the problem."""
    if not request.messages:
        raise InvalidRequest("messages is empty: send at least one message")
    messages = tuple(_message_from_pb(i, m) for i, m in enumerate(request.messages))
    if messages[-1].role is Role.ASSISTANT:
        raise InvalidRequest("the last message must be from the user or the system, not the assistant")
    return ChatRequest(messages=messages, options=_options_from_pb(request.options),
                       model=request.model, adapter=request.adapter)


def _message_from_pb(index: int, message: chat_pb2.Message) -> ChatMessage:
    role = _ROLE_FROM_PB.get(message.role)
    if role is None:
        raise InvalidRequest(f"messages[{index}].role is not set (use ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT)")
    if not message.text.strip() and not message.images:
        raise InvalidRequest(f"messages[{index}] has neither text nor images")
    if message.images and role is not Role.USER:
        raise InvalidRequest(f"messages[{index}]: only user messages may carry images")
    # Every image is checked here, whatever the backend, so that a bad file is
    # reported as such (and not as, say, "this model takes no images").
    for number, image in enumerate(message.images):
        validate_image(image.data, f"messages[{index}].images[{number}]")
    return ChatMessage(role=role, text=message.text, images=tuple(img.data for img in message.images))


def _options_from_pb(options: chat_pb2.GenerationOptions) -> GenerationOptions:
    result = GenerationOptions(
        temperature=options.temperature if options.HasField("temperature") else None,
        top_p=options.top_p if options.HasField("top_p") else None,
        max_tokens=options.max_tokens if options.HasField("max_tokens") else None,
        seed=options.seed if options.HasField("seed") else None,
        stop=tuple(s for s in options.stop if s),
    )
    if result.temperature is not None and not 0 <= result.temperature <= 2:
        raise InvalidRequest("temperature must be between 0 and 2")
    if result.top_p is not None and not 0 < result.top_p <= 1:
        raise InvalidRequest("top_p must be greater than 0 and at most 1")
    if result.max_tokens == 0:
        raise InvalidRequest("max_tokens must be at least 1")
    return result


_FINISH_TO_PB = {"stop": chat_pb2.FINISH_REASON_STOP, "length": chat_pb2.FINISH_REASON_LENGTH}


def delta_to_pb(text: str, model: str) -> chat_pb2.ChatResponse:
    return chat_pb2.ChatResponse(delta=text, model=model)


def final_to_pb(final: ChatFinal, model: str) -> chat_pb2.ChatResponse:
    return chat_pb2.ChatResponse(
        model=model,
        final=chat_pb2.ChatFinal(
            finish_reason=_FINISH_TO_PB.get(final.finish_reason, chat_pb2.FINISH_REASON_UNSPECIFIED),
            prompt_tokens=final.prompt_tokens,
            completion_tokens=final.completion_tokens,
            time_to_first_token_seconds=final.time_to_first_token,
            total_seconds=final.total_seconds,
            tokens_per_second=final.tokens_per_second,
        ),
    )
