"""Checks images with Pillow before any backend sees them.

Bytes that are not an image of an accepted format, are truncated, or would
decompress into a huge bitmap (a "decompression bomb") are refused with a
message that says which of those it is.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InvalidRequest

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}
# 50 megapixels: far above what any vision model uses (mllama tiles at 560 px),
# far below what would exhaust memory when decoded.
MAX_PIXELS = 50_000_000


def validate_image(data: bytes, label: str = "image") -> Image.Image:
    """Decodes the image fully and returns it; raises InvalidRequest when it is unusable."""
    if not data:
        raise InvalidRequest(f"{label} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format
            if fmt not in ACCEPTED_FORMATS:
                raise InvalidRequest(f"{label} is {fmt}; accepted formats are JPEG, PNG, WebP, GIF and BMP")
            if image.width * image.height > MAX_PIXELS:
                raise InvalidRequest(f"{label} is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,} pixels")
            image.load()  # decodes everything now, so truncation is caught here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequest(f"{label} is too large when decoded (decompression bomb refused)") from None
    except UnidentifiedImageError:
        raise InvalidRequest(f"{label} is not an image in a recognised format (JPEG, PNG, WebP, GIF, BMP)") from None
    except OSError as error:
        raise InvalidRequest(f"{label} could not be decoded ({error}); the file may be truncated or corrupt") from None
    return image
