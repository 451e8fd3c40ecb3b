"""Hostile inputs: the small ones are committed in tests/data/bad/ (rewritten by
`python -m tests.support.hostile tests/data/bad`), the big ones are made here at
test time so the repository stays small (a 100 MB upload is a generator of
zero-filled chunks, never a file).
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from tests.support.audio_clips import png_bytes, speech

MB = 1024 * 1024


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(side: int = 30_000) -> bytes:
    """A 1-bit grey PNG of side × side pixels (900 megapixels by default) whose
    rows are all zeros: ~110 MB of pixel data that deflate squeezes into ~110 KB.
    Compressed row by row so the raw bitmap never sits in this process either."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def patterned_png(width: int = 64, height: int = 48) -> bytes:
    """A real RGB PNG with detail (so its IDAT is long enough to cut in the middle)."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 11) % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def long_flac(seconds: float, rate: int = 8000, declare_duration: bool = True) -> bytes:
    """`seconds` of digital silence, 8 kHz mono FLAC: an hour is a few hundred KB
    and encodes in about a second (Opus would take ~30 s on a small CPU).

    With declare_duration=False the STREAMINFO's total-samples field is zeroed
    ("unknown", as a streamed recording has), so the ASR cannot refuse it from
    the header and must count while it decodes."""
    buffer = io.BytesIO()
    frame_samples = 4608
    silence = np.zeros((1, frame_samples), dtype=np.int16)
    with av.open(buffer, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.format = "s16"
        for index in range(int(seconds * rate) // frame_samples):
            frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, index * frame_samples
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(buffer.getvalue())
    if not declare_duration:
        # "fLaC", then the STREAMINFO block header (4 bytes) and body: total
        # samples are the low 36 bits of body bytes 10..17, after the rate,
        # channels and bits per sample (FLAC format, STREAMINFO).
        at = 4 + 4 + 10
        packed = int.from_bytes(data[at:at + 8], "big")
        data[at:at + 8] = (packed & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def zeros(total: int, chunk: int = MB) -> Iterator[bytes]:
    """`total` bytes of zeros as a stream of chunks: a big upload that is never in memory at once."""
    block = b"\x00" * chunk
    sent = 0
    while sent < total:
        piece = block[:min(chunk, total - sent)]
        sent += len(piece)
        yield piece


def nested_json(depth: int) -> bytes:
    """`[[[…]]]` nested `depth` deep: deeper than any parser's recursion allows."""
    return b"[" * depth + b"]" * depth


def write_small_corpus(folder: Path) -> None:
    """Writes the committed files of tests/data/bad/ (seeded, so reruns give the same bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    webm = speech("Hola, esto es una grabación cortada por la mitad.", "webm")
    png = patterned_png()
    files = {
        "empty.webm": b"",
        "png-named.webm": png_bytes(),
        "random.ogg": np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "webm-header-only.webm": webm[:200],
        "webm-cut-in-half.webm": webm[:len(webm) // 2],
        # Signature, IHDR and a third of the IDAT chunk: the pixels stop early.
        "truncated.png": png[:33 + (len(png) - 33) // 3],
        "jpeg-header-only.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
        "script.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>\n',
        "script.html": b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>\n",
        "bomb.png": png_bomb(),
        # Latin-1, as an old client sends it without saying so: not UTF-8 from its first byte.
        "message-latin1.txt": "¿Qué tal, señor?".encode("latin-1"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    write_small_corpus(Path(sys.argv[1]))
