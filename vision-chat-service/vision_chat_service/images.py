"""Checks images with Pillow before any backend sees them.

Bytes that are not an image of an accepted format, are truncated, or would
decompress into a huge bitmap (a "decompression bomb") are refused with a
message that says which of those it is.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

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
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow's plugins signal a malformed file with any of these, not only
        # OSError: a PNG whose chunk header is zeroed raises SyntaxError("broken PNG
        # file") from load(), which escaped as an internal error (a 502) until the
        # decoder fuzz (tests/hostile/test_fuzz.py) found it.
        raise InvalidRequest(f"{label} could not be decoded ({error}); the file may be truncated or corrupt") from None
    return image


def prepare_image(data: bytes, max_long_side: int | None = None, max_pixels: int | None = None,
                  label: str = "image") -> Image.Image:
    """The image as the model should see it: upright, RGB, no larger than it uses.

    - Phones store photos sideways with an EXIF Orientation tag that viewers
      honour; models see raw pixels, so the rotation is applied here.
    - An animated GIF is read as its first frame.
    - Transparency is flattened onto white (a plain RGB conversion turns it
      black, which hides dark drawings on transparent backgrounds).
    - Downscaling (never upscaling) to the model's working size keeps a 50 MP
      photo from costing the processor seconds and memory for pixels it then
      throws away.
    """
    image = validate_image(data, label)
    image.seek(0)  # first frame of an animation; a no-op for still images
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    scale = 1.0
    if max_long_side:
        scale = min(scale, max_long_side / max(image.size))
    if max_pixels:
        scale = min(scale, (max_pixels / (image.width * image.height)) ** 0.5)
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
