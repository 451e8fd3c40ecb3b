"""Dialogue pairs from the `chatterbot-corpus` package (BSD) as chat rows.

The corpus ships YAML files per language (`chatterbot_corpus/data/spanish/*.yml`),
each with `conversations`: lists of statements where every statement answers
the one before. Each consecutive pair becomes one row
`{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`, the format
TRL formats with the tokenizer's chat template.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

PREFIX = "chatterbot:"


class CorpusError(ValueError):
    pass


def corpus_folder(language: str) -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("package chatterbot-corpus is not installed: pip install chatterbot-corpus==1.3.3")
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    folder = root / language
    if not folder.is_dir():
        languages = ", ".join(sorted(path.name for path in root.iterdir() if path.is_dir()))
        raise CorpusError(f"chatterbot-corpus has no language {language!r}; it has: {languages}")
    return folder


def corpus_files(language: str) -> list[Path]:
    return sorted(corpus_folder(language).glob("*.yml"))


def load_pairs(language: str) -> list[dict]:
    """Unique (statement, answer) pairs of one language, in file order."""
    rows, seen = [], set()
    for path in corpus_files(language):
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in content.get("conversations") or []:
            statements = [str(item).strip() for item in conversation if item is not None and str(item).strip()]
            for question, answer in zip(statements, statements[1:]):
                if (question, answer) in seen:
                    continue
                seen.add((question, answer))
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
    return rows
