"""YAML config + command-line overrides onto the dataclasses of config.py.

The shape of TRL's `TrlParser` (a `--config FILE`, then `--key value` pairs
that win over the file), with two differences: unknown keys are refused
wherever they come from, with the nearest known key suggested, and parsing
imports nothing heavy, so a typo is reported in well under a second instead
of after torch and transformers have loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from trainer.config import SECTIONS, Config, ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


@dataclasses.dataclass(frozen=True)
class _Key:
    section: type
    field: dataclasses.Field
    hint: Any

    @property
    def choices(self) -> list[str] | None:
        return self.field.metadata.get("choices")


def _keys() -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for item in dataclasses.fields(section):
            if item.name in keys:  # one flat namespace: a clash is a programming error
                raise RuntimeError(f"key {item.name!r} is defined twice")
            keys[item.name] = _Key(section, item, hints[item.name])
    return keys


KEYS = _keys()


def _unknown(key: str, origin: str) -> ConfigError:
    close = difflib.get_close_matches(key, KEYS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {origin}{hint} (`python -m trainer --help` lists every key)")


def _optional_inner(hint: Any) -> tuple[Any, bool]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def coerce(name: str, value: Any) -> Any:
    """Converts a YAML value or a command-line string to the key's declared type."""
    key = KEYS[name]
    hint, optional = _optional_inner(key.hint)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None
    try:
        converted = _convert(hint, value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"`{name}`: {error}") from None
    if key.choices and converted not in key.choices:
        raise ConfigError(f"`{name}` is {converted!r}; choose one of {', '.join(key.choices)}")
    return converted


def _convert(hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int, str)):
            return int(value)
        raise ValueError(f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float, str)):  # PyYAML reads `2e-4` (no dot) as a string
            return float(value)
        raise ValueError(f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if typing.get_origin(hint) is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return [_convert(typing.get_args(hint)[0], item) for item in value]
        raise ValueError(f"expected a list, got {value!r}")
    raise TypeError(f"unsupported type {hint!r}")


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must be a mapping of key: value, not {type(content).__name__}")
    values = {}
    for key, value in content.items():
        if key not in KEYS:
            raise _unknown(str(key), f"config file {path}")
        values[key] = coerce(key, value)
    return values


def split_command_line(argv: list[str]) -> tuple[Path | None, dict[str, Any], str]:
    """(config file, overrides, action). `--key value`, `--key=value`, a bare
    `--flag` (true for a boolean), and `--list a b c` for list keys. The action is
    "train", "help" or "print_config" (show the resolved configuration, train nothing)."""
    config_file: Path | None = None
    overrides: dict[str, Any] = {}
    action = "train"
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if token in ("-h", "--help"):
            return config_file, overrides, "help"
        if token in ("--print_config", "--print-config"):
            action = "print_config"
            continue
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: arguments are --key value pairs")
        name, has_value, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        values = [inline] if has_value else []
        if not has_value:
            while index < len(argv) and not argv[index].startswith("--"):
                values.append(argv[index])
                index += 1
        if name == "config":
            if len(values) != 1:
                raise ConfigError("--config takes one file")
            config_file = Path(values[0])
            continue
        if name not in KEYS:
            raise _unknown(name, "the command line")
        hint, _ = _optional_inner(KEYS[name].hint)
        if not values:
            if hint is not bool:
                raise ConfigError(f"--{name} needs a value")
            values = ["true"]
        if typing.get_origin(hint) is list:
            raw: Any = values if len(values) > 1 else values[0]
        elif len(values) == 1:
            raw = values[0]
        else:
            raise ConfigError(f"--{name} takes one value, got {values}")
        overrides[name] = coerce(name, raw)
    return config_file, overrides, action


def parse(argv: list[str]) -> Config | None:
    """The configuration for `argv`, or None when help was asked for (and printed)."""
    return parse_with_action(argv)[0]


def parse_with_action(argv: list[str]) -> tuple[Config | None, str]:
    config_file, overrides, action = split_command_line(argv)
    if action == "help":
        print(help_text())
        return None, action
    values = load_yaml(config_file) if config_file else {}
    values.update(overrides)
    sections = []
    for section in SECTIONS:
        names = {item.name for item in dataclasses.fields(section)}
        sections.append(section(**{key: value for key, value in values.items() if key in names}))
    return Config(*sections), action


def help_text() -> str:
    lines = [
        "usage: python -m trainer --config FILE [--key value ...] [--print_config]",
        "",
        "Keys come from the config file (YAML) and the command line; the command line wins.",
        "Booleans: --flag, --flag true, --flag false. Lists: --key a b c or --key a,b,c.",
        "--print_config checks the configuration and prints it as YAML, without training.",
    ]
    for section in SECTIONS:
        lines += ["", f"{section.__name__}:"]
        for item in dataclasses.fields(section):
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            lines.append(f"  --{item.name} (default {default!r})")
            lines.append(f"      {item.metadata.get('help', '')}")
    return "\n".join(lines)
