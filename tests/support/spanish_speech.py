"""The Spanish test speech of the ASR benchmarks and how they score it.

22 sentences that espeak-ng says (tests/support/audio_clips.py), and word error
rate normalised as Whisper's basic normaliser does for Spanish: lowercase, no
accents, no punctuation. Shared by bench/asr_latency.py (the latency table's WER),
bench/asr_audio_context.py and the ASR tests that compare transcripts.
"""

from __future__ import annotations

import unicodedata

SHORT = "Hola, quiero saber el tiempo de mañana."
SENTENCES = [
    SHORT,
    "Buenos días, ¿cómo estás hoy?",
    "La casa tiene un jardín muy grande.",
    "Me gusta leer libros por la noche.",
    "El tren sale de la estación a las ocho.",
    "Mi hermana vive en Barcelona desde hace años.",
    "Necesito comprar pan y leche en el mercado.",
    "Hace mucho calor en verano.",
    "¿Dónde está la biblioteca más cercana?",
    "Los niños juegan en el parque.",
    "Quiero reservar una mesa para dos personas.",
    "El perro duerme junto a la ventana.",
    "Vamos a la playa este fin de semana.",
    "La reunión empieza a las diez de la mañana.",
    "Por favor, cierra la puerta al salir.",
    "Mañana voy a visitar a mis abuelos.",
    "El café está demasiado caliente.",
    "Aprender un idioma nuevo requiere paciencia.",
    "La película fue muy interesante.",
    "¿Puedes ayudarme con esta tarea?",
    "El médico me recomendó descansar.",
    "Hoy el cielo está despejado y azul.",
]


def normalise(text: str) -> list[str]:
    """Lowercase, accents and punctuation removed: what WER is computed on."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "".join(ch if ch.isalnum() else " " for ch in plain).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def word_errors(reference: str, heard: str) -> tuple[int, int]:
    """(word edits, reference words) of ``heard`` against ``reference``, both normalised."""
    words = normalise(reference)
    return edit_distance(words, normalise(heard)), len(words)
