"""Request bodies of OpenAI's chat completions API, as far as this server serves it.

Unknown fields are accepted and ignored (clients send many: `user`,
`frequency_penalty`, `metadata`…); fields whose meaning this server cannot
honour (several choices, tools, JSON mode, logprobs) are refused by
convert.py with a message that says so, instead of being silently dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

INT64 = 2**63 - 1
MAX_STOP_STRINGS = 16


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    # OpenAI's "low"/"high"/"auto": accepted, the model's processor decides.
    detail: str | None = None


class ContentPart(BaseModel):
    """One part of a message: `{"type": "text", "text"}` or `{"type": "image_url", "image_url": {"url"}}`.
    Other types (input_audio, file…) are refused by convert.py, naming the type."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    # Some clients send the URL as a bare string.
    image_url: ImageURL | str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    # Passed through to the chat service, which answers NOT_FOUND (404) for a
    # model it does not serve; empty uses its configured model.
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=2**32 - 1)
    # The newer name of max_tokens; it wins when both are given.
    max_completion_tokens: int | None = Field(None, ge=1, le=2**32 - 1)
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
