"""Finds the fine-tuned adapters that the trainer wrote (docs/adapters.md).

One folder per adapter under ADAPTERS_DIR, its manifest.json written last. A
folder that does not follow the contract is skipped with a reason that the
service logs, so that a half-written or foreign folder never stops it.
Reading is cheap (a few small JSON files), so the service simply scans again
every few seconds rather than depending on inotify, which does not see
changes made on another host of a shared volume.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = {"format_version": int, "name": str, "kind": str, "task": str, "base_model": str, "created": str}
TASKS = ("text", "vision")
# PEFT writes one of these next to adapter_config.json.
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    task: str
    base_model: str
    created: str
    # Changes when the folder is replaced, so that a retrained adapter is reloaded.
    stamp: tuple[float, int]


class InvalidAdapter(Exception):
    """The folder is not a servable adapter; the message says why."""


def read_adapter(folder: Path, base_matches: Callable[[str], bool]) -> AdapterInfo:
    if not NAME_PATTERN.fullmatch(folder.name):
        raise InvalidAdapter("the folder name is not a valid adapter name ([a-z0-9][a-z0-9._-]{0,63})")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise InvalidAdapter("no manifest.json (incomplete: the trainer writes it last)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InvalidAdapter(f"manifest.json is not valid JSON ({error})") from None
    _check_manifest(manifest, folder.name)
    if not base_matches(manifest["base_model"]):
        raise InvalidAdapter(f"it was trained on {manifest['base_model']!r}, not on the model this service has loaded")
    if not (folder / "adapter_config.json").is_file():
        raise InvalidAdapter("adapter_config.json is missing")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise InvalidAdapter("the adapter weights (adapter_model.safetensors) are missing")
    stat = manifest_path.stat()
    return AdapterInfo(name=folder.name, path=folder, task=manifest["task"], base_model=manifest["base_model"],
                       created=manifest["created"], stamp=(stat.st_mtime, stat.st_ino))


def _check_manifest(manifest: object, folder_name: str) -> None:
    if not isinstance(manifest, dict):
        raise InvalidAdapter("manifest.json is not a JSON object")
    for key, kind in REQUIRED_KEYS.items():
        if key not in manifest:
            raise InvalidAdapter(f"manifest.json lacks the required key {key!r}")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise InvalidAdapter(f"manifest.json key {key!r} should be a {kind.__name__}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise InvalidAdapter(f"format_version {manifest['format_version']} is not supported (this service reads 1)")
    if manifest["name"] != folder_name:
        raise InvalidAdapter(f"manifest.json names {manifest['name']!r}, not its folder {folder_name!r}")
    if manifest["kind"] != "lora":
        raise InvalidAdapter(f"kind {manifest['kind']!r} is not supported (only 'lora')")
    if manifest["task"] not in TASKS:
        raise InvalidAdapter(f"task {manifest['task']!r} is neither 'text' nor 'vision'")


def scan(adapters_dir: Path, base_matches: Callable[[str], bool]) -> tuple[dict[str, AdapterInfo], dict[str, str]]:
    """Returns (adapters by name, reason by skipped folder name). A missing
    folder means no adapters yet (the trainer has not run), not an error."""
    adapters: dict[str, AdapterInfo] = {}
    skipped: dict[str, str] = {}
    try:
        folders = sorted(p for p in adapters_dir.iterdir() if p.is_dir())
    except OSError:
        return adapters, skipped
    for folder in folders:
        if folder.name.startswith("."):
            continue  # a trainer's work in progress (.<name>.partial-…), never served
        try:
            adapters[folder.name] = read_adapter(folder, base_matches)
        except InvalidAdapter as reason:
            skipped[folder.name] = str(reason)
        except OSError as error:  # vanished or unreadable while we looked
            skipped[folder.name] = f"cannot be read ({error})"
    return adapters, skipped


def base_matcher(model_name: str, model_path: str | Path) -> Callable[[str], bool]:
    """Whether a manifest's base_model names the loaded model: by the name the
    service was configured with (a Hugging Face id, `smollm2-135m-instruct`),
    or as a path to the same folder."""
    resolved = _resolved(model_path)

    def matches(base_model: str) -> bool:
        if base_model in (model_name, str(model_path)):
            return True
        return resolved is not None and _resolved(base_model) == resolved

    return matches


def _resolved(path: str | Path) -> Path | None:
    try:
        candidate = Path(path).expanduser()
        return candidate.resolve() if candidate.exists() else None
    except (OSError, ValueError):
        return None
