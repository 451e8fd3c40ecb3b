"""The adapter folder, written as docs/adapters.md says: everything into a
hidden sibling `.<name>.partial-<random>`, manifest.json last, then one rename
into place, so the chat service never sees half an adapter. Also the run
folder's checkpoints: which one to resume from, and their removal once the
adapter is published."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_VERSIONED = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "trainer")


class AdapterExists(FileExistsError):
    pass


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in _VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a metric is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def manifest(
    *,
    name: str,
    base_model: str,
    task: str = "text",
    dataset: dict | None = None,
    hyperparameters: dict | None = None,
    metrics: dict | None = None,
    samples: list[dict] | None = None,
    run: dict | None = None,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": "lora",
        "task": task,
        "base_model": base_model,
        "created": utc_now(),
        "dataset": dataset,
        "hyperparameters": hyperparameters,
        "versions": versions(),
        "metrics": {key: finite(value) for key, value in (metrics or {}).items()},
        "samples": samples or [],
        "run": run or {},
    }


def modelfile(ollama_from: str) -> str:
    return (
        "# Ollama: `ollama create NAME -f Modelfile`, run in this folder.\n"
        "# FROM must be the same weights the adapter was trained on (unquantised is best).\n"
        f"FROM {ollama_from}\n"
        "ADAPTER .\n"
    )


class OutputNotWritable(OSError):
    """The adapters folder (or the run folder) cannot be written: full, read-only or not ours."""


def check_writable(folder: Path, what: str) -> None:
    """Fails at the start, not after hours of training, when `folder` cannot be written."""
    probe = folder / f".write-test-{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputNotWritable(f"the {what} {folder} cannot be written ({error.strerror}): nothing was "
                                "trained; fix the volume or choose another folder") from None


def check_target_free(adapters_dir: Path, name: str, overwrite: bool) -> None:
    if (adapters_dir / name).exists() and not overwrite:
        raise AdapterExists(f"adapter {adapters_dir / name} already exists: pick another name or pass --overwrite")


def remove_stale_partials(adapters_dir: Path, name: str) -> None:
    """Temporary folders a killed run left behind (never served: their names start with '.')."""
    for stale in adapters_dir.glob(f".{name}.partial-*"):
        log.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def publish(
    adapters_dir: Path,
    name: str,
    write_files: Callable[[Path], None],
    manifest_content: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Calls write_files(staging) for the adapter's files, writes the manifest last,
    and renames the folder into place. On any failure nothing is left behind."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    target = adapters_dir / name
    check_target_free(adapters_dir, name, overwrite)
    staging = adapters_dir / f".{name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        write_files(staging)
        text = json.dumps(manifest_content, indent=2, ensure_ascii=False, allow_nan=False)
        (staging / MANIFEST).write_text(text + "\n", encoding="utf-8")
        _fsync_tree(staging)
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("adapter written to %s", target)
    return target


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    if not target.exists():
        os.rename(staging, target)  # fails rather than merge if another run got there first
        return
    if not overwrite:
        raise AdapterExists(f"adapter {target} appeared while training: not replacing it")
    # Two renames: the old adapter steps aside (hidden), the new one takes its name.
    retired = target.parent / f".{target.name}.replaced-{secrets.token_hex(4)}"
    os.rename(target, retired)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """On disk before the rename, and readable by the chat service whatever its user
    (safetensors writes its files owner-only)."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def checkpoints(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and path.is_dir()
    ]
    return [path for _, path in sorted(found)]


def complete(checkpoint: Path) -> bool:
    """transformers writes trainer_state.json after the weights, optimizer and RNG
    state; a checkpoint whose state file is missing or cut short was interrupted."""
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("adapter_model.*"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    for checkpoint in reversed(checkpoints(run_dir)):
        if complete(checkpoint):
            return checkpoint
        log.warning("skipping %s: incomplete (the run was interrupted while saving it)", checkpoint)
    return None


def remove_checkpoints(run_dir: Path) -> None:
    for checkpoint in checkpoints(run_dir):
        shutil.rmtree(checkpoint, ignore_errors=True)
