"""Settings of the ASR service, read from the environment (docs/configuration.md).

One typed class, so a typo'd or nonsensical value stops the process at start
with a message naming the variable, instead of surfacing as a confusing error
on the first request. Field names are the Python side; ``validation_alias``
ties each to its documented variable.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024

# Compute types CTranslate2 understands, plus our "auto" (int8 on CPU, float16 on GPU).
COMPUTE_TYPES = frozenset(
    {
        "auto",
        "default",
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    }
)

# What openai-whisper (PyTorch) can run: fp16 on a GPU, fp32 anywhere.
OPENAI_WHISPER_COMPUTE_TYPES = frozenset({"auto", "default", "float16", "float32"})

# ISO 639-1 codes (two letters) plus Whisper's few longer ones ("haw", "yue").
# The exact list belongs to the loaded model; the engine checks against it.
_LANGUAGE_SHAPE = re.compile(r"^[a-z]{2,3}$")


class Settings(BaseSettings):
    """Everything the ASR process can be told from outside."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        populate_by_name=True,
        extra="ignore",
    )

    host: str = Field("127.0.0.1", validation_alias="ASR_HOST")
    port: int = Field(50051, ge=0, le=65535, validation_alias="ASR_PORT")

    # Which implementation runs the model (engine.ENGINES): faster-whisper
    # (CTranslate2, the default) or openai-whisper (PyTorch, optional extra).
    engine: Literal["faster-whisper", "openai-whisper"] = Field(
        "faster-whisper", validation_alias="ASR_ENGINE"
    )
    model: str = Field("base", min_length=1, validation_alias="ASR_MODEL")
    language: str = Field("es", validation_alias="ASR_LANGUAGE")
    # Detection (a request's language empty, or ASR_LANGUAGE empty): up to
    # ``language_detection_segments`` 30 s windows of speech are looked at; the
    # first whose top language is more probable than the threshold decides,
    # else the language top in most windows wins (language_detection.py).
    # 1 = the first window only; threshold 1 = never sure, always vote.
    language_detection_segments: int = Field(
        4, ge=1, le=100, validation_alias="ASR_LANGUAGE_DETECTION_SEGMENTS"
    )
    language_detection_threshold: float = Field(
        0.5, ge=0.0, le=1.0, validation_alias="ASR_LANGUAGE_DETECTION_THRESHOLD"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", validation_alias="ASR_DEVICE"
    )
    compute_type: str = Field("auto", validation_alias="ASR_COMPUTE_TYPE")
    beam_size: int = Field(5, ge=1, le=16, validation_alias="ASR_BEAM_SIZE")
    max_audio_seconds: float = Field(
        3600.0, gt=0, validation_alias="ASR_MAX_AUDIO_SECONDS"
    )

    # Concurrency: ``workers`` transcriptions run at once (each one is CPU-bound
    # and already multi-threaded inside CTranslate2), ``max_queue`` more may
    # wait; beyond that requests are refused with RESOURCE_EXHAUSTED (HTTP 429)
    # rather than piling up until every client times out.
    workers: int = Field(1, ge=1, le=64, validation_alias="ASR_WORKERS")
    max_queue: int = Field(8, ge=0, le=10_000, validation_alias="ASR_MAX_QUEUE")
    # Batching (faster-whisper): the ≤30 s speech chunks of concurrent requests
    # (and of one long recording) with equal options go through the model
    # together, up to ``batch_size`` chunks, waiting at most ``batch_window_ms``
    # for company. 0 = auto: 8 on a GPU, 1 on a CPU (measured:
    # bench/results/asr_batching_cpu_2026-11-28.txt); 1 = no batching.
    batch_size: int = Field(0, ge=0, le=256, validation_alias="ASR_BATCH_SIZE")
    batch_window_ms: float = Field(10.0, ge=0, le=1000, validation_alias="ASR_BATCH_WINDOW_MS")
    # faster-whisper: below 30, the encoder sees the smallest multiple of this
    # many seconds that holds the speech plus 5 s instead of Whisper's whole
    # 30 s window (encoder_window.py): 15 makes prompts under 10 s 2.7x faster
    # on a CPU, at some cost in words; 30 (the default) = always the whole window.
    encoder_window_s: int = Field(30, ge=1, le=30, validation_alias="ASR_ENCODER_WINDOW_S")
    # CTranslate2 intra-op threads per worker; 0 = one per CPU core.
    cpu_threads: int = Field(0, ge=0, le=256, validation_alias="ASR_CPU_THREADS")

    models_dir: Path = Field(Path(".cache/models"), validation_alias="MODELS_DIR")
    max_upload_mb: int = Field(25, ge=1, le=2000, validation_alias="MAX_UPLOAD_MB")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("ASR_HOST must not be empty (use 0.0.0.0 for all interfaces)")
        return value

    @field_validator("language")
    @classmethod
    def _language_shape(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not _LANGUAGE_SHAPE.match(value):
            raise ValueError(
                f"ASR_LANGUAGE must be a language code such as 'es' or 'en', "
                f"or empty to detect; got {value!r}"
            )
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("compute_type")
    @classmethod
    def _known_compute_type(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in COMPUTE_TYPES:
            raise ValueError(
                f"ASR_COMPUTE_TYPE must be one of {', '.join(sorted(COMPUTE_TYPES))}; "
                f"got {value!r}"
            )
        return value

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _compute_type_fits_engine(self) -> Settings:
        # int8 and friends are CTranslate2's; PyTorch Whisper would silently
        # run fp32 instead, so a user asking for int8 there is told at start.
        if self.engine == "openai-whisper" and self.compute_type not in OPENAI_WHISPER_COMPUTE_TYPES:
            raise ValueError(
                f"ASR_COMPUTE_TYPE={self.compute_type} is not available with "
                "ASR_ENGINE=openai-whisper; use auto, float16 (GPU) or float32"
            )
        return self

    @field_validator("models_dir")
    @classmethod
    def _absolute_models_dir(cls, value: Path) -> Path:
        # Resolved once, so a later chdir cannot move the cache under our feet.
        return value.expanduser().resolve()

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        value = value.strip().upper()
        if not isinstance(logging.getLevelName(value), int):
            raise ValueError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {value!r}"
            )
        return value

    @property
    def max_upload_bytes(self) -> int:
        """Largest accepted encoded audio, in bytes."""
        return self.max_upload_mb * MIB

    @property
    def grpc_message_limit(self) -> int:
        """gRPC send/receive limit: the upload limit plus 1 MiB for the envelope.

        Why the headroom: anything nginx and the gateway accept must also fit
        through gRPC, so that an oversized upload is refused by our own check
        (with a clear message) and never by gRPC's generic one.
        """
        return self.max_upload_bytes + MIB
