"""Settings of the chat service, read from the environment (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What CHAT_MODEL means when it is left empty, per backend.
# For openai, empty means "the first model the server lists": vLLM and
# llama.cpp's server serve one model, so that is the one that is loaded.
DEFAULT_MODELS = {"transformers": "smollm2-135m-instruct", "ollama": "llama3.2-vision", "openai": ""}

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Field names are the environment variable names (matched case-insensitively)."""

    model_config = SettingsConfigDict(extra="ignore")

    chat_host: str = "127.0.0.1"
    chat_port: int = Field(50052, ge=0, le=65535)
    chat_backend: Literal["transformers", "ollama", "openai"] = "transformers"
    chat_model: str = ""
    chat_max_tokens: int = Field(256, ge=1, le=32768)
    # Used when a request sets none. Small models ramble at higher values
    # (SmolLM2's authors suggest 0.2).
    chat_temperature: float = Field(0.2, ge=0, le=2)
    chat_device: Literal["auto", "cpu", "cuda"] = "auto"
    # transformers backend: one tiny generation (with an image on a vision model)
    # before health turns SERVING. On a GPU the first generation pays for CUDA
    # and cuBLAS start-up (4.2 s for an 11B-Vision-shaped model on an H200,
    # bench/results/chat_gpu_h200_2026-11-28.txt): this way no user waits for it.
    # auto = on for CUDA, off on the CPU (nothing comparable to pay there).
    chat_warmup: Literal["auto", "on", "off"] = "auto"
    # 4bit = NF4 weights through bitsandbytes (transformers backend, CUDA): an
    # 11B vision model then fits in ~8 GiB instead of ~21 GiB, ~15 % slower.
    chat_quantization: Literal["none", "4bit"] = "none"
    # Prepended as a system message when a conversation brings none of its own.
    chat_system_prompt: str = ""
    # Generations run one after another per worker; callers beyond the queue get
    # RESOURCE_EXHAUSTED at once rather than waiting without bound.
    chat_workers: int = Field(1, ge=1, le=64)
    chat_max_queue: int = Field(8, ge=0, le=1024)
    models_dir: Path = Path(".cache/models")
    # One folder per fine-tuned adapter, written by the trainer (docs/adapters.md).
    adapters_dir: Path = Path(".cache/adapters")
    # How often the adapters folder is scanned again for new, changed or removed
    # adapters; 0 = only at start. A scan reads a few small JSON files.
    chat_adapters_poll_s: float = Field(5.0, ge=0, le=3600)
    max_upload_mb: int = Field(25, ge=1, le=1024)
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_keep_alive: str = "30m"
    # Any OpenAI-compatible server (vLLM, TGI, llama.cpp server, LocalAI): the
    # API root that /models and /chat/completions hang from.
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    # Sent as a Bearer token when set; a SecretStr so that it never shows in
    # logs or in a printed Settings.
    openai_api_key: SecretStr = SecretStr("")
    # /v1/models does not say whether a model reads images, so the operator
    # does. Images to a server configured as text-only are refused before sending.
    openai_vision: bool = False
    # Images per request, counted over the whole conversation: vLLM's limit
    # (--limit-mm-per-prompt) is per prompt, and its default is 1.
    openai_max_images: int = Field(1, ge=1, le=64)
    log_level: str = "INFO"

    @field_validator("ollama_url", "openai_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{info.field_name.upper()} must start with http:// or https://")
        return value.rstrip("/")

    @property
    def model_name(self) -> str:
        return self.chat_model or DEFAULT_MODELS[self.chat_backend]

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: the upload limit plus headroom for the envelope."""
        return (self.max_upload_mb + 1) * MIB
