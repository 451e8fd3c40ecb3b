"""OpenAI chat completions ⇄ chat_pb2: the request in, the answer (whole or as chunks) out."""

from __future__ import annotations

import time
import uuid

from chatbot_protos.chat.v1 import chat_pb2

from .errors import invalid
from .images import image_from_url
from .schemas import MAX_STOP_STRINGS, ChatCompletionRequest, ChatMessage

# OpenAI's "developer" role is the newer name of "system".
_ROLES = {"system": chat_pb2.ROLE_SYSTEM, "developer": chat_pb2.ROLE_SYSTEM,
          "user": chat_pb2.ROLE_USER, "assistant": chat_pb2.ROLE_ASSISTANT}
_FINISH_NAMES = {chat_pb2.FINISH_REASON_STOP: "stop", chat_pb2.FINISH_REASON_LENGTH: "length"}


# --- request ------------------------------------------------------------------

def to_chat_request(body: ChatCompletionRequest) -> chat_pb2.ChatRequest:
    _refuse_unsupported(body)
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    return chat_pb2.ChatRequest(messages=messages, options=_options(body), model=body.model)


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.n is not None and body.n > 1:
        raise invalid("n: this server returns one choice per request; send n=1 or leave it out", "n")
    if body.tools or body.functions:
        raise invalid("tools: tool and function calling are not supported by this server",
                      "tools" if body.tools else "functions")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise invalid(f"response_format: type {body.response_format.get('type')!r} is not supported; "
                      "only 'text' is", "response_format")
    if body.logprobs:
        raise invalid("logprobs: log probabilities are not available from this server", "logprobs")


def _message(index: int, message: ChatMessage) -> chat_pb2.Message:
    where = f"messages[{index}]"
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid(f"{where}.role: {message.role!r} is not supported; use system, developer, user or "
                      "assistant (tool messages need tool calling, which this server does not do)",
                      f"{where}.role")
    result = chat_pb2.Message(role=role)
    if message.content is None or isinstance(message.content, str):
        result.text = message.content or ""
        return result
    texts = []
    for number, part in enumerate(message.content):
        param = f"{where}.content[{number}]"
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            url = part.image_url.url if hasattr(part.image_url, "url") else part.image_url
            if not url:
                raise invalid(f"{param}.image_url: the url is missing", f"{param}.image_url")
            result.images.append(image_from_url(url, f"{param}.image_url"))
        else:
            raise invalid(f"{param}: content parts of type {part.type!r} are not supported; "
                          "use 'text' and 'image_url'", f"{param}.type")
    result.text = "\n".join(t for t in texts if t)
    return result


def _options(body: ChatCompletionRequest) -> chat_pb2.GenerationOptions:
    options = chat_pb2.GenerationOptions()
    if body.temperature is not None:
        options.temperature = body.temperature
    if body.top_p is not None:
        options.top_p = body.top_p
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        options.max_tokens = max_tokens
    if body.seed is not None:
        options.seed = body.seed
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(f"stop: at most {MAX_STOP_STRINGS} stop strings", "stop")
    options.stop.extend(s for s in stops if s)
    return options


# --- response -----------------------------------------------------------------

def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def finish_reason(final: chat_pb2.ChatFinal) -> str:
    return _FINISH_NAMES.get(final.finish_reason, "stop")


def usage(final: chat_pb2.ChatFinal) -> dict:
    return {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
            "total_tokens": final.prompt_tokens + final.completion_tokens}


def completion(id_: str, created: int, model: str, text: str, final: chat_pb2.ChatFinal) -> dict:
    """A whole `chat.completion` object."""
    return {"id": id_, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason(final)}],
            "usage": usage(final)}


class ChunkWriter:
    """`chat.completion.chunk` objects of one streamed answer (same id, time and model)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id, self.created, self.model = completion_id(), now(), model
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict], **extra) -> dict:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            # OpenAI sends usage: null on every chunk but the last when usage is asked for.
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def delta(self, delta: dict, finish: str | None = None) -> dict:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def role(self) -> dict:
        return self.delta({"role": "assistant", "content": ""})

    def content(self, text: str) -> dict:
        return self.delta({"content": text})

    def finish(self, final: chat_pb2.ChatFinal) -> dict:
        return self.delta({}, finish_reason(final))

    def usage(self, final: chat_pb2.ChatFinal) -> dict:
        return self._chunk([], usage=usage(final))
