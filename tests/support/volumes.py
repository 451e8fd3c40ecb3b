"""Small real filesystems for the storage-failure tests: a tmpfs of a given
size, mounted for the test (the suite runs as root, as `make test` does to
install its system packages), that can be filled up or mounted read-only."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_volume(where: Path, size: str, *options: str):
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", *options)), "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"these tests mount a small tmpfs and need root: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(volume: Path) -> Path:
    """Writes zeros until the volume is full; returns the filler file."""
    filler = volume / "filler"
    with filler.open("wb") as file:
        try:
            while True:
                file.write(bytes(64 * 1024))
                file.flush()
        except OSError:
            pass
    return filler
