"""Decodes an uploaded clip to the 16 kHz mono float32 samples Whisper expects.

Everything happens in-process with PyAV (FFmpeg's libraries, bundled in its
wheel) reading from a ``BytesIO``: no shell, no ``ffmpeg`` binary, no temp
files shared between requests. The container is detected from the bytes, so
the client's MIME type can be wrong without harm (browsers disagree on it).

Decoding policy, and why:
- a packet that fails to decode is skipped: a live recording may carry a few
  damaged frames and the rest of it is still worth transcribing (faster-whisper
  does the same, see its ``_ignore_invalid_frames``);
- a container that stops early (the upload was cut) keeps what was decoded;
  only when nothing at all decodes is the clip refused;
- length is checked against the limit while decoding, so an hour-long upload
  is refused after reading just past the limit, not after decoding all of it.

Unlike faster-whisper's ``decode_audio`` there is no ``gc.collect()`` after each
clip (its workaround for leaked resamplers, SYSTRAN/faster-whisper#390): with
PyAV 18 the resident size stayed flat over 2,400 decodes here, and a full
collection per request costs time under load.
"""

from __future__ import annotations

import errno
import io
import logging

import av
import numpy as np

from .errors import AudioTooLong, InvalidAudio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what Whisper's feature extractor is built for

_PREFIX = "could not decode audio"


def decode_audio(data: bytes, max_seconds: float, *, growing: bool = False) -> np.ndarray:
    """Decode ``data`` (any container FFmpeg knows) to mono float32 at 16 kHz.

    Raises ``InvalidAudio`` for empty, non-audio or undecodable input and
    ``AudioTooLong`` past ``max_seconds``. ``growing=True`` says the bytes are
    the head of a live stream (StreamingTranscribe): stopping early is then the
    normal case, not worth a log line.
    """
    if not data:
        raise InvalidAudio("audio is empty: the request carried no bytes")

    with _open(data) as container:
        if not container.streams.audio:
            kinds = sorted({stream.type for stream in container.streams}) or ["no"]
            raise InvalidAudio(
                f"{_PREFIX}: no audio stream found "
                f"(the {container.format.name} data has {'/'.join(kinds)} streams)"
            )
        stream = container.streams.audio[0]
        _refuse_if_declared_too_long(container, max_seconds)
        samples = _decode_stream(container, stream, max_seconds, growing)

    if samples.size == 0:
        raise InvalidAudio(
            f"{_PREFIX}: no audio samples could be decoded "
            "(the file is empty, corrupt or truncated)"
        )
    return samples


def _open(data: bytes) -> av.container.InputContainer:
    """Open ``data`` as a container, translating FFmpeg's errors into ours."""
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as error:
        raise InvalidAudio(
            f"{_PREFIX}: the data is not a recognised audio format"
        ) from error
    except (av.error.FFmpegError, OSError, EOFError) as error:
        # EOF / EIO while probing: the header itself is incomplete.
        raise InvalidAudio(f"{_PREFIX}: {_describe(error)}") from error


def _refuse_if_declared_too_long(container: av.container.InputContainer, max_seconds: float) -> None:
    """Fail fast when the container states a duration over the limit.

    Not every container states one (a browser's streaming webm does not), so
    ``_decode_stream`` still counts samples.
    """
    if container.duration is None:
        return
    seconds = container.duration / av.time_base
    if seconds > max_seconds:
        raise AudioTooLong(_too_long_message(seconds, max_seconds))


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    max_seconds: float,
    growing: bool = False,
) -> np.ndarray:
    """Demux and decode one audio stream, resampled to 16 kHz mono float32."""
    # "flt" is packed float32: for mono it is exactly the array Whisper wants,
    # so no int16 round trip and no rescaling afterwards.
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    skipped = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                skipped += 1
                continue
            for frame in frames:
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
            if total > max_samples:
                raise AudioTooLong(_too_long_message(None, max_seconds))
        for out in resampler.resample(None):  # flush the resampler's tail
            total += _append(chunks, out)
    except (av.error.FFmpegError, OSError, EOFError, ValueError) as error:
        if not chunks:
            raise InvalidAudio(f"{_PREFIX}: {_describe(error)}") from error
        # Cut-off upload: keep what arrived (see the module docstring).
        if not growing:
            logger.info("audio ends early (%s); using the %.1f s decoded", error, total / SAMPLE_RATE)
    if skipped:
        logger.info("skipped %d undecodable audio packets", skipped)
    if total > max_samples:
        raise AudioTooLong(_too_long_message(None, max_seconds))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _append(chunks: list[np.ndarray], frame: av.AudioFrame) -> int:
    """Add one resampled frame's samples; return how many there were."""
    samples = frame.to_ndarray().reshape(-1)
    chunks.append(samples)
    return samples.size


def _too_long_message(seconds: float | None, max_seconds: float) -> str:
    length = f"{seconds:.1f} s" if seconds is not None else f"over {max_seconds:g} s"
    return f"audio is too long: {length}; the limit is {max_seconds:g} s (ASR_MAX_AUDIO_SECONDS)"


def _describe(error: BaseException) -> str:
    """A short, client-safe reason for an FFmpeg failure."""
    code = getattr(error, "errno", None)
    if isinstance(error, EOFError) or code in (errno.EIO, errno.EPIPE):
        return "the data ends too early (truncated or corrupt file)"
    if isinstance(error, av.error.InvalidDataError) or code == errno.EINVAL:
        return "the audio data is corrupt"
    if isinstance(error, ValueError):
        return "the audio stream changes format midway, which is not supported"
    return "the audio could not be read (corrupt or truncated file)"
