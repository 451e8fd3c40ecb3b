"""The images of a vision dataset: found, typed, and checked before any model loads.

A vision row is chat `messages` plus an `images` column (a list per row) or an
`image` column (one per row), which is what TRL's vision collator reads. The
images can be what a Hub dataset holds (datasets' Image feature: bytes or a
path) or, in local jsonl/json/csv/parquet files, paths relative to the data
file's folder (or absolute). Paths become the Image feature here, so the
collator gets PIL images; they are decoded per batch, never all at once.

Every image is opened and verified up front: a missing or corrupt image would
otherwise stop the run at whatever step first draws its row, after the model
loaded and maybe hours of training.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("images", "image")


class ImageDataError(ValueError):
    """An image of the dataset cannot be used; the message names the row and the image."""


def image_column(columns: list[str]) -> str | None:
    return next((column for column in IMAGE_COLUMNS if column in columns), None)


def prepare(dataset: Dataset, column: str, base_folder: Path | None, what: str) -> Dataset:
    """`column` as datasets' Image feature (a list of them for `images`), with
    relative paths resolved against `base_folder`; every image checked."""
    from datasets import Image, List, Value

    feature = dataset.features[column]
    inner = feature.feature if isinstance(feature, List) else feature
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        if base_folder is not None:
            dataset = dataset.map(lambda row: {column: _absolute(row[column], base_folder)})
        check_images(dataset, column, what)  # before the cast, which would fail on a missing file
        return dataset.cast_column(column, List(Image()) if isinstance(feature, List) else Image())
    if not isinstance(inner, Image):
        raise ImageDataError(f"dataset {what}: column {column!r} holds {feature}, not images or image paths")
    check_images(dataset, column, what)
    return dataset


def _absolute(value: Any, base_folder: Path) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_absolute(item, base_folder) for item in value]
    path = Path(value)
    return str(path if path.is_absolute() else base_folder / path)


def undecoded(dataset: Dataset) -> Dataset:
    """The same rows with image columns as {bytes, path} instead of decoded pictures."""
    from datasets import Image, List

    for column in IMAGE_COLUMNS:
        feature = dataset.features.get(column)
        if isinstance(feature, Image):
            dataset = dataset.cast_column(column, Image(decode=False))
        elif isinstance(feature, List) and isinstance(feature.feature, Image):
            dataset = dataset.cast_column(column, List(Image(decode=False)))
    return dataset


def check_images(dataset: Dataset, column: str, what: str) -> None:
    """Opens and verifies every image (PIL reads headers and checksums, not all
    pixels); entries are paths or datasets' undecoded images."""
    started, count = time.monotonic(), 0
    for index, row in enumerate(undecoded(dataset)):
        entries = row[column]
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry is None:
                continue
            _verify(entry, f"dataset {what}, row {index}")
            count += 1
    if count == 0:
        raise ImageDataError(f"dataset {what} has an {column!r} column but no images in it")
    log.info("checked %d images in %.1f s", count, time.monotonic() - started)


def _verify(entry: dict | str, where: str) -> None:
    """`entry`: a path, or datasets' undecoded image {bytes, path}."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(entry, str):
        entry = {"path": entry, "bytes": None}
    name = entry.get("path") or "(embedded bytes)"
    try:
        source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry["path"]
        if source is None:
            raise ImageDataError(f"{where}: an image entry has neither bytes nor a path")
        with Image.open(source) as picture:
            picture.verify()
    except FileNotFoundError:
        raise ImageDataError(f"{where}: image {name} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # Pillow raises SyntaxError for some malformed files (PNG chunks).
        raise ImageDataError(f"{where}: image {name} does not load ({error})") from None


def digest_value(value: Any) -> str:
    """How image bytes enter the dataset's sha256 (data.py hashes rows as JSON)."""
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return str(value)
