"""Known Whisper inventions: stock phrases it writes when it hears no speech.

Whisper was trained on subtitled video, so on silence, hiss or music it tends
to "transcribe" the credits and calls to action those subtitles carried
(widely reported on openai/whisper's discussion board; in Spanish the Amara.org credit
and YouTube outros dominate). Silero VAD in front of the model (on by
default in both engines) is what keeps them out: measured with Whisper base
int8 on 10 s of digital silence, a quiet room's hiss, and white and pink noise
from -40 to -10 dBFS, the service returns empty text with VAD on, while the
same model with VAD off writes "No, no, no, no, no, no." on the hiss
(tests/asr/test_hallucinations.py).

This list is therefore not applied as a filter today. It is kept here, in one
place, for the tests that prove none of these appear on non-speech, and for a
narrow guard should a future model or engine need one. A guard must stay
narrow: these are real sentences a user may say ("Gracias por ver el video"
ends many a dictated script), so it may only drop a phrase on audio the model
itself judged to hold no speech (high ``no_speech_probability``), never
wherever the text matches.

Pure Python with no imports from the package, so tests that run outside the
service's virtualenv can load it by path.
"""

from __future__ import annotations

import re
import unicodedata

# Written as Whisper writes them; ``is_known_invention`` compares normalised
# text (lower case, no accents or punctuation), so variants of spacing,
# casing and punctuation match too.
KNOWN_INVENTIONS: tuple[str, ...] = (
    # Spanish
    "¡Suscríbete al canal!",
    "Suscríbete",
    "Subtítulos realizados por la comunidad de Amara.org",
    "Subtítulos por la comunidad de Amara.org",
    "Subtitulado por la comunidad de Amara.org",
    "Amara.org",
    "Gracias por ver el video",
    "Gracias por ver el vídeo",
    "¡Gracias por ver!",
    "No olvides suscribirte",
    "Dale like y suscríbete",
    "Nos vemos en el próximo video",
    "Muchas gracias por ver",
    "Subtítulos en español",
    # English, for detection and translation paths
    "Thanks for watching!",
    "Thank you for watching",
    "Please subscribe to my channel",
    "Subtitles by the Amara.org community",
    "Like and subscribe",
)


def normalise(text: str) -> str:
    """Lower case, accents and punctuation removed, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w]+", " ", bare).split())


_NORMALISED = tuple(normalise(phrase) for phrase in KNOWN_INVENTIONS)


def known_inventions_in(text: str) -> list[str]:
    """The known inventions that ``text`` contains (as whole words), in list order."""
    padded = f" {normalise(text)} "
    return [
        phrase
        for phrase, plain in zip(KNOWN_INVENTIONS, _NORMALISED)
        if f" {plain} " in padded
    ]


def is_known_invention(text: str) -> bool:
    """True when ``text`` contains one of the stock phrases above."""
    return bool(known_inventions_in(text))
