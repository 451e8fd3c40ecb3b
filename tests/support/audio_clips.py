"""Test audio made on the spot: espeak-ng speech, re-encoded in-memory with PyAV.

Why generate instead of checking in fixtures: the clips stay tiny in the repo
(none), every browser container (Chrome webm/opus, Firefox ogg/opus, Safari
mp4/aac) is covered from one source, and the spoken text is known exactly.
Everything here is plain functions returning bytes so other test folders
(the end-to-end and browser tests) reuse them.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ESPEAK = "espeak-ng"


@dataclass(frozen=True)
class Container:
    """How one browser (or file) format is written: muxer, codec, sample rate."""

    muxer: str
    codec: str
    sample_rate: int
    mime_type: str
    muxer_options: tuple[tuple[str, str], ...] = ()


# Opus only runs at 8/12/16/24/48 kHz, so it gets 48 kHz like MediaRecorder's;
# AAC and MP3 get the usual 44.1 kHz of a file recorded elsewhere.
CONTAINERS: dict[str, Container] = {
    "webm": Container("webm", "libopus", 48000, "audio/webm;codecs=opus"),
    "ogg": Container("ogg", "libopus", 48000, "audio/ogg;codecs=opus"),
    "mp4": Container("mp4", "aac", 44100, "audio/mp4"),
    # What Safari's MediaRecorder writes: fragmented MP4 (an empty moov, then
    # moof+mdat fragments), which a decoder must read without a sample index.
    "fmp4": Container("mp4", "aac", 48000, "audio/mp4",
                      (("movflags", "frag_keyframe+empty_moov+default_base_moof"),)),
    "mp3": Container("mp3", "libmp3lame", 44100, "audio/mpeg"),
    "flac": Container("flac", "flac", 22050, "audio/flac"),
    "wav": Container("wav", "pcm_s16le", 22050, "audio/wav"),
}


def speak_wav(text: str, voice: str = "es") -> bytes:
    """Return a WAV of espeak-ng saying ``text`` (22.05 kHz mono, 16-bit).

    The argument list (no shell) keeps quotes and accents in ``text`` literal.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(
            [ESPEAK, "-v", voice, "-w", str(out), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return out.read_bytes()


def wav_to_samples(wav: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV to mono float32 samples in [-1, 1] and its sample rate."""
    with av.open(io.BytesIO(wav)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks = [
            frame.to_ndarray().astype(np.float32).reshape(-1) / 32768.0
            for frame in container.decode(stream)
        ]
    return np.concatenate(chunks), rate


def silence(seconds: float, rate: int = 16000, hiss: float = 0.004) -> tuple[np.ndarray, int]:
    """A quiet room: no speech, only a seeded hiss at about -48 dBFS.

    Why not digital zeros: Whisper stays quiet on those anyway, so they prove
    nothing. On this exact hiss Whisper base with the VAD filter off hears
    "No, no, no, no, no, no." (checked with faster-whisper 1.2.1, int8, CPU):
    the silence test fails if the service stops filtering non-speech.
    """
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, hiss, int(seconds * rate)).astype(np.float32)
    return samples, rate


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Encode mono float samples into the container ``fmt`` (a CONTAINERS key)."""
    spec = CONTAINERS[fmt]
    pcm = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16).reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=spec.muxer, options=dict(spec.muxer_options)) as out:
        stream = out.add_stream(spec.codec, rate=spec.sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name,
            layout="mono",
            rate=spec.sample_rate,
            # Encoders such as AAC and Opus want fixed-size frames.
            frame_size=stream.codec_context.frame_size or None,
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def speech(text: str, fmt: str, voice: str = "es") -> bytes:
    """espeak-ng speech of ``text`` encoded as ``fmt``."""
    samples, rate = wav_to_samples(speak_wav(text, voice))
    return encode(samples, rate, fmt)


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A valid, tiny grey PNG: an upload that is a file, just not audio."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def speech_lasting(sentences: list[str], seconds: float, voice: str = "es",
                   gap: float = 0.7) -> tuple[np.ndarray, int]:
    """espeak-ng reading ``sentences`` in turn (again from the first if need be)
    until at least ``seconds`` of audio, ``gap`` s of silence after each.

    The gap stays below the VAD's 2 s minimum silence, so the speech runs on as
    one recording. Each sentence is spoken once and reused (espeak is
    deterministic), which keeps long clips cheap to make.
    """
    spoken = [wav_to_samples(speak_wav(sentence, voice)) for sentence in sentences]
    rate = spoken[0][1]
    pause = np.zeros(int(gap * rate), dtype=np.float32)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * rate:
        samples, _ = spoken[len(parts) // 2 % len(spoken)]
        parts += [samples, pause]
        total += samples.size + pause.size
    return np.concatenate(parts), rate
