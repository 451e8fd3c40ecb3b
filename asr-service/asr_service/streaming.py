"""Live dictation: a growing recording in, interim and final text per utterance out.

How it works, and why this way (simple and correct first):
- Browsers' MediaRecorder sends one growing webm/ogg stream cut at arbitrary
  byte offsets, not self-contained clips. Every ~1 s of new audio the whole
  accumulated byte string is decoded again (``decode_audio(growing=True)``).
  Decoding opus is ~1 ms per second of audio, so even a minute-long stream
  costs far less to re-decode than one Whisper pass, and there is no decoder
  state to get wrong when a chunk ends mid-packet. Incremental demuxing is the
  optimisation to make if streams get long (the bytes are bounded by
  MAX_UPLOAD_MB and the audio by ASR_MAX_AUDIO_SECONDS either way).
- Silero VAD (faster-whisper's) splits the audio after the last final into
  utterances: a pause of at least ``end_silence_s`` (0.8 s) after speech ends
  one; so does the end of the stream, or ``max_utterance_s`` of speech (Whisper
  sees 30 s at most).
- An open utterance is transcribed as it grows (greedy, beam 1, a 15 s encoder
  window: interims are thrown away a second later) and sent as an interim
  result; a closed one is transcribed with the caller's options and the
  service's window and sent as final.
- Steps are coalesced: while Whisper works, chunks keep arriving, and the next
  step takes all of them. A slow machine sends fewer interims, never a backlog.

The blocking work (VAD, Whisper) runs in the service's bounded worker pool, one
step at a time per stream; the event loop only buffers bytes. It keeps the
unbatched path even when ASR_BATCH_SIZE > 1 (``batchable=False``): batching
streams' interims is possible (they share options) but untested so far.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np

from .audio import SAMPLE_RATE, decode_audio
from .engine import Engine, TranscribeOptions
from .errors import AudioTooLarge, InvalidAudio
from .worker_pool import BoundedWorkerPool

logger = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 16 * 1024  # per StreamingTranscribeRequest.audio_chunk (asr.proto)
INTERIM_WINDOW_S = 15  # encoder window step for interim passes (faster-whisper)


@dataclass(frozen=True)
class StreamSettings:
    step_s: float = 1.0  # new audio between two interim passes
    end_silence_s: float = 0.8  # a pause this long after speech ends the utterance
    max_utterance_s: float = 25.0  # forced final below Whisper's 30 s window
    pad_s: float = 0.2  # audio kept after the last speech when cutting
    keep_silence_s: float = 1.0  # silence kept before speech that may be starting
    # Bytes after which a stream that still decodes to nothing is refused (a
    # webm/ogg header is a few hundred bytes; 64 KiB is seconds of opus).
    undecodable_limit_bytes: int = 64 * 1024


@dataclass(frozen=True)
class StreamResult:
    text: str
    is_final: bool
    stability: float  # 0..1, how unlikely an interim is to change; 1 for finals
    language: str
    start: float  # seconds from the start of the stream
    end: float


def speech_spans(samples: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample indices of speech, by Silero VAD, unpadded."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # heavy import

    if samples.size < SAMPLE_RATE // 4:
        return []
    options = VadOptions(min_silence_duration_ms=300, speech_pad_ms=0, min_speech_duration_ms=200)
    return [(span["start"], span["end"]) for span in get_speech_timestamps(samples, options)]


def _words(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return ["".join(ch for ch in word if ch.isalnum()) for word in plain.split()]


def stability(previous: str, current: str) -> float:
    """Share of ``current``'s words that the previous hypothesis already had, in place.

    Words that survived one more second of audio rarely change again, so this
    is a cheap, honest estimate of how much of the interim will stay.
    """
    before, now = _words(previous), _words(current)
    if not now:
        return 0.0
    same = 0
    for a, b in zip(before, now):
        if a != b:
            break
        same += 1
    return same / len(now)


class UtteranceTracker:
    """Per-stream state: where the open utterance starts and what was said of it.

    ``process`` is blocking (VAD + Whisper): run it in the worker pool, one call
    at a time per stream.
    """

    def __init__(self, engine: Engine, options: TranscribeOptions,
                 settings: StreamSettings = StreamSettings()) -> None:
        self._engine = engine
        self._options = replace(options, batchable=False)
        # Interims are greedy, without word times or temperature fallback, on a
        # short encoder window (about half the time on a CPU; encoder_window.py):
        # they live for a second, and the final is decoded with the caller's
        # options and the service's window.
        self._interim_options = replace(self._options, beam_size=1, word_timestamps=False,
                                        temperature_fallback=False, encoder_window_s=INTERIM_WINDOW_S)
        self._settings = settings
        self._start = 0  # sample where the open utterance's audio begins
        self._last_interim = ""
        self._interims = 0  # sent for the open utterance
        self.finals = 0
        self.interims_sent = 0

    def process(self, samples: np.ndarray, ended: bool) -> list[StreamResult]:
        """Results for the stream decoded so far (``samples`` only ever grows)."""
        results: list[StreamResult] = []
        while True:
            window = samples[self._start:]
            spans = speech_spans(window)
            cut = self._utterance_end(spans, window.size, ended)
            if cut is None:
                break
            speech_end, next_start = cut
            final = self._final(window[:speech_end])
            if final is not None:
                results.append(final)
            self._start += next_start
        if not ended:
            interim = self._interim(samples, spans)
            if interim is not None:
                results.append(interim)
        elif self._interims:  # interims were sent, then VAD found no speech after all
            self._interims, self._last_interim = 0, ""
            self.finals += 1
            at = samples.size / SAMPLE_RATE
            results.append(StreamResult("", True, 1.0, self._options.language or "", at, at))
        return results

    def _utterance_end(self, spans: list[tuple[int, int]], length: int, ended: bool) -> tuple[int, int] | None:
        """(end of the utterance's audio, start of the next window), or None if still open."""
        if not spans:
            return None
        silence = int(self._settings.end_silence_s * SAMPLE_RATE)
        pad = int(self._settings.pad_s * SAMPLE_RATE)
        for i, (_, end) in enumerate(spans):
            following = spans[i + 1][0] if i + 1 < len(spans) else length
            last = i + 1 == len(spans)
            if following - end >= silence or (ended and last):
                return min(end + pad, length), (length if ended and last else min(end + pad, following))
        limit = int(self._settings.max_utterance_s * SAMPLE_RATE)
        if spans[-1][1] >= limit:  # one long breathless utterance: cut it
            cut = next((end for _, end in reversed(spans) if end < limit), limit)
            return cut, cut
        return None

    def _interim(self, samples: np.ndarray, spans: list[tuple[int, int]]) -> StreamResult | None:
        window = samples[self._start:]
        if not spans:
            # Nothing said since the last final: drop the silence, keeping a
            # little in case speech is starting right at the edge.
            keep = int(self._settings.keep_silence_s * SAMPLE_RATE)
            self._start = max(self._start, samples.size - keep)
            return None
        transcript = self._engine.transcribe(window, self._interim_options)
        if not transcript.text or transcript.text == self._last_interim:
            return None
        score = stability(self._last_interim, transcript.text)
        self._last_interim = transcript.text
        self._interims += 1
        self.interims_sent += 1
        return StreamResult(transcript.text, False, score, transcript.language,
                            self._start / SAMPLE_RATE, samples.size / SAMPLE_RATE)

    def _final(self, utterance: np.ndarray) -> StreamResult | None:
        transcript = self._engine.transcribe(utterance, self._options)
        had_interims = self._interims > 0
        self._last_interim, self._interims = "", 0
        # An empty final is still sent when interims were: it clears them.
        if not transcript.text and not had_interims:
            return None
        self.finals += 1
        start = self._start / SAMPLE_RATE
        return StreamResult(transcript.text, True, 1.0, transcript.language,
                            start, start + utterance.size / SAMPLE_RATE)


async def transcribe_stream(
    chunks: AsyncIterator[bytes],
    tracker: UtteranceTracker,
    pool: BoundedWorkerPool,
    *,
    max_bytes: int,
    max_seconds: float,
    settings: StreamSettings = StreamSettings(),
) -> AsyncIterator[StreamResult]:
    """Results for a stream of encoded audio chunks, as they become known.

    A reader task buffers chunks while Whisper works on the previous step. If
    the caller stops iterating (the gRPC client went away) the reader is
    cancelled and no further step starts.
    """
    buffer = bytearray()
    arrived = asyncio.Event()
    state: dict[str, object] = {"ended": False, "error": None}

    async def read() -> None:
        try:
            async for chunk in chunks:
                if len(buffer) + len(chunk) > max_bytes:
                    raise AudioTooLarge(
                        f"audio stream is too large: over {max_bytes // (1024 * 1024)} MiB "
                        "(MAX_UPLOAD_MB)"
                    )
                buffer.extend(chunk)
                arrived.set()
        except Exception as error:  # noqa: BLE001 - handed to the consumer below
            state["error"] = error
        finally:
            state["ended"] = True
            arrived.set()

    reader = asyncio.create_task(read())
    step = int(settings.step_s * SAMPLE_RATE)
    processed = 0
    # Samples per byte, learnt from the last decode, so that the stream is
    # re-decoded about once a step, not once a chunk.
    samples_per_byte = 0.0
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            if state["error"] is not None:
                raise state["error"]  # type: ignore[misc]
            ended = bool(state["ended"])
            if ended and not buffer:
                return  # the client stopped before sending any audio
            known_rate = samples_per_byte > 0  # once something has decoded
            if not ended and known_rate and 1.1 * len(buffer) * samples_per_byte < processed + step:
                continue
            samples = await asyncio.to_thread(_decode_head, bytes(buffer), max_seconds, ended)
            if samples is not None:
                samples_per_byte = samples.size / len(buffer)
            if samples is None:
                if len(buffer) > settings.undecodable_limit_bytes:
                    raise InvalidAudio(
                        f"could not decode audio: the first {len(buffer)} bytes of the stream "
                        "are not a recognised audio format"
                    )
                continue
            if not ended and samples.size - processed < step:
                continue
            processed = samples.size
            for result in await pool.run(tracker.process, samples, ended):
                yield result
            if ended:
                return
    finally:
        reader.cancel()


def _decode_head(data: bytes, max_seconds: float, ended: bool) -> np.ndarray | None:
    """Decode what has arrived; None while not even the header is complete."""
    try:
        return decode_audio(data, max_seconds, growing=not ended)
    except InvalidAudio:
        if ended:
            raise
        return None
