"""Hand the memory a finished transcription freed back to the operating system.

Why: a Whisper pass allocates and frees a few hundred MB of buffers (audio
features, encoder activations, decoder caches, several hypotheses when the
temperature fallback samples). glibc's malloc keeps freed memory in its arenas
for reuse, so the process stays at the largest peak any request reached, per
arena, and which arena a thread lands in depends on timing. Measured on the
2-core CPU with the memory test's loop (tests/asr/test_memory.py): resident
size 457-475 MiB after warm-up, with one-off steps of 60-110 MiB at random
later requests (one of them failed that test in CI, 412 → 472 MiB); with the
free memory handed back whenever the pool goes idle, 266-274 MiB and flat.

``malloc_trim(0)`` returns every arena's free pages, not only the heap's top.
It costs 10-20 ms of one core on this CPU after a model pass and next to nothing
after a cheap request; the pool calls it after the reply has been handed over
and only when no other job is running or waiting, so no request waits for it.
C libraries without ``malloc_trim`` (musl, macOS) simply keep their own policy.
"""

from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return free heap pages to the OS; a no-op without glibc's malloc_trim."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)  # ctypes drops the GIL for the call
