"""How a language is detected when a request leaves it empty: the rule both
engines follow, and its two settings.

Whisper guesses the language from one 30 s window of audio. One window is
not always enough: a recording may open with a few words in another
language, music or a name. So detection looks at up to ``segments`` 30 s
windows of the VAD-kept speech, in order:

- the first window whose top language is more probable than ``threshold``
  decides, with that probability (the usual case: one window, as before);
- if no window is that sure, the language that came out top in the most
  windows wins (a tie goes to the one that was top first), with the highest
  probability it had in a window where it was top.

This is faster-whisper's own rule (``WhisperModel.detect_language``, its
``language_detection_segments`` / ``language_detection_threshold``), which
the faster-whisper engine calls directly; the openai-whisper engine, whose
library has no such option, runs ``first_sure_or_most_often`` below over its
windows. Either way the reported probability is the model's probability of
the language it reports, never that of another language.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageDetection:
    """ASR_LANGUAGE_DETECTION_SEGMENTS / ASR_LANGUAGE_DETECTION_THRESHOLD."""

    segments: int = 1  # 30 s windows of speech looked at, at most
    threshold: float = 0.5  # a window whose top language is above this decides


def first_sure_or_most_often(tops: Iterable[tuple[str, float]], threshold: float) -> tuple[str, float]:
    """The language (and its probability) from each window's top language, in order.

    ``tops`` may be lazy: it is read only until a window is sure, so the
    windows after it are never computed. Mirrors the loop of faster-whisper
    1.2's ``WhisperModel.detect_language``, strict ``>`` and tie-break included.
    """
    seen: dict[str, list[float]] = {}  # language → its probabilities where it was top
    for language, probability in tops:
        if probability > threshold:
            return language, probability
        seen.setdefault(language, []).append(probability)
    if not seen:
        raise ValueError("language detection needs at least one window")
    # max() keeps the first of equal counts, and dicts keep insertion order:
    # a tie goes to the language that was top first, as in faster-whisper.
    language = max(seen, key=lambda name: len(seen[name]))
    return language, max(seen[language])
