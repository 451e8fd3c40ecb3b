"""Encode only as much of Whisper's 30 s window as a short prompt needs.

Whisper's encoder always processes a 30 s window: a 3 s voice prompt is padded
with 27 s of nothing, and on a CPU that encoder pass is most of the request's
time (about 1.0 s of 1.1 s for Whisper base on 2 cores). CTranslate2 accepts
shorter inputs, so, as whisper.cpp's ``audio_ctx`` does, the window is cut to
the smallest multiple of ``step_s`` seconds that holds the speech plus 5 s of
the padding; never more than 30 s.

Why 5 s of padding: Whisper was trained on whole windows and reads the end of
speech from the padding after it. Cut close to the speech (1 s after it), an
8 s piece of real speech was once transcribed twice over; with 5 s none was.
Why multiples of a step, not the exact length: the encoder sees few distinct
shapes, and requests batched together (their chunks are padded to the
longest) get the window they would get alone, so batching keeps their words.

Opt-in (ASR_ENCODER_WINDOW_S=15, say), not the default. Measured
(bench/asr_audio_context.py, bench/results/asr_audio_context_*): with the
service's decoding (0.5 s lead-in, VAD, beam 5, temperature fallback) a 15 s
window makes the 22 Spanish espeak sentences 2.7x faster with the same WER,
and changes a few words of real English speech cut in 4 s pieces, as often for
the better as for the worse. But on the browser end-to-end test's recording
(Chromium's microphone, Opus) it heard "en Madrid" as "en mafid" in 2 runs of
3, where the whole window heard "Madrid" in 3 of 3: Whisper was trained on
whole windows, and a user's words come before speed, so the whole window stays
the default and the cut is a setting for CPUs where latency matters more.
Live dictation's interim results, replaced a second later, always use it
(streaming.py); their finals use the setting.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

FRAMES_PER_SECOND = 100  # Whisper's log-mel frames (10 ms hop)
WHOLE_WINDOW_S = 30
# Padding kept after the speech, in frames (5 s: the module docstring says why).
TAIL_FRAMES = 5 * FRAMES_PER_SECOND


def speech_frames(features: np.ndarray) -> int:
    """Frames up to the last one that is not padding, over a batch of windows.

    faster-whisper pads each window with exact zeros (``pad_or_trim``); a log-mel
    frame of audio, digital silence included, is never all zeros (the
    normalised log floor is -1.5).
    """
    columns = np.flatnonzero(np.abs(features).reshape(-1, features.shape[-1]).sum(axis=0) > 0)
    return int(columns[-1]) + 1 if columns.size else 0


def window_frames(features: np.ndarray, step_s: int) -> int:
    """How many frames of ``features`` (…, mels, 3000) the encoder needs."""
    whole = features.shape[-1]
    step = step_s * FRAMES_PER_SECOND
    needed = speech_frames(features) + TAIL_FRAMES
    return min(whole, max(step, math.ceil(needed / step) * step))


def short_window_model_class():
    """faster-whisper's ``WhisperModel`` with the window cut before each encoder pass.

    A subclass, not a patch: ``encode`` is the one method every path of
    faster-whisper (transcribe, language detection, the batched pipeline) calls
    with a padded window.
    """
    from faster_whisper import WhisperModel  # heavy import, kept out of import time

    class ShortWindowWhisperModel(WhisperModel):
        step_s = WHOLE_WINDOW_S  # the service's setting (ASR_ENCODER_WINDOW_S)

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # A request's own step, per worker thread: a transcription runs in
            # one thread from start to end (the engine drains faster-whisper's
            # lazy segments there), and other workers share the model.
            self._request = threading.local()

        @contextmanager
        def window_step(self, step_s: int | None) -> Iterator[None]:
            """Encode with ``step_s`` (None: the service's) inside the block, in this thread."""
            self._request.step_s = step_s
            try:
                yield
            finally:
                self._request.step_s = None

        def encode(self, features: np.ndarray):
            step_s = getattr(self._request, "step_s", None) or self.step_s
            if step_s < WHOLE_WINDOW_S:
                features = np.ascontiguousarray(features[..., :window_frames(features, step_s)])
            return super().encode(features)

    return ShortWindowWhisperModel
