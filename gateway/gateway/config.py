"""Settings of the gateway, read from the environment (docs/configuration.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
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
    # The speech model GET /v1/models lists when the ASR service cannot be asked
    # (it normally answers its own ListModels): the same ASR_MODEL it reads.
    asr_model: str = "base"

    # --- users and storage (docs/configuration.md)
    # "on": every route but health needs an API key or a browser session.
    # "off": one local user, no credentials; refused unless the gateway binds to loopback.
    gateway_auth: Literal["on", "off"] = "on"
    # Where the SQLite database and the stored images live (a volume in compose).
    gateway_data_dir: Path = Path(".data")
    # Empty: SQLite in gateway_data_dir. PostgreSQL: postgresql://user:password@host:5432/db
    database_url: str = ""
    session_days: float = Field(30, gt=0)  # how long a browser login lasts
    # Seconds a checked key or session is trusted without asking the database
    # again (accounts/cache.py); revocations reach other replicas within this. 0: off.
    auth_cache_s: float = Field(30, ge=0)
    # Per user: model calls (chat, transcription) a minute, as a bucket that
    # refills continuously, and chat/dictation streams open at once.
    rate_limit_per_minute: int = Field(60, ge=1)
    max_streams_per_user: int = Field(4, ge=1)
    # Per client address: sign-in attempts a minute (slows password guessing).
    login_attempts_per_minute: int = Field(10, ge=1)
    # Browser origins allowed to call the API from other sites, comma-separated
    # ("https://app.example.com"); empty: none (the app is served from the same origin by nginx).
    cors_origins: str = ""
    # The most stored messages of a conversation sent back to the model with a new one.
    history_max_messages: int = Field(40, ge=1)

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> "Settings":
        if self.gateway_auth == "off" and not is_loopback(self.gateway_host):
            raise ValueError(f"GATEWAY_AUTH=off lets anyone who reaches the gateway use it as the one user, so it "
                             f"needs GATEWAY_HOST on loopback (127.0.0.1 or ::1), not {self.gateway_host!r}; "
                             f"turn auth on or bind to loopback")
        return self

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.gateway_data_dir / 'gateway.db').resolve()}"

    @property
    def images_dir(self) -> Path:
        return self.gateway_data_dir / "images"

    @property
    def allowed_origins(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MIB

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: the upload limit plus headroom for the envelope."""
        return (self.max_upload_mb + 1) * MIB


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides) -> Settings:
    """Settings from the environment, or an exit with one readable line per wrong setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                 for e in error.errors()]
        raise SystemExit("gateway: invalid settings:\n  " + "\n  ".join(lines)) from None
