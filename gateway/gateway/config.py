"""Settings of the gateway, read from the environment (docs/configuration.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Field names are the environment variable names (matched case-insensitively)."""

    model_config = SettingsConfigDict(extra="ignore")

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8000, ge=0, le=65535)
    asr_addr: str = "127.0.0.1:50051"
    chat_addr: str = "127.0.0.1:50052"
    max_upload_mb: int = Field(25, ge=1, le=1024)
    chat_timeout_s: float = Field(300, gt=0)
    transcribe_timeout_s: float = Field(300, gt=0)
    # SSE comment lines keep idle proxies from closing a stream while the model thinks.
    sse_heartbeat_s: float = Field(15, gt=0)
    log_level: str = "INFO"
    # "json": one JSON object per log line (for log collectors); both formats
    # carry the request id.
    gateway_log_format: Literal["text", "json"] = "text"
    # The speech model that GET /v1/models lists: the same ASR_MODEL the ASR
    # service reads (the ASR has no RPC that lists its model).
    asr_model: str = "base"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MIB

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: the upload limit plus headroom for the envelope."""
        return (self.max_upload_mb + 1) * MIB
