"""Training data: from the Hub, a local file or folder, chatterbot-corpus or
easy-vqa; checked and reduced to the columns TRL trains on, with a held-out
eval split.

Formats (TRL's own, DESIGN.md §4):
- text: one column of already formatted text (guanaco's `<s>[INST] … [/INST] …`);
- messages: a list of {"role", "content"}, formatted by the tokenizer's chat template;
- prompt_completion: `prompt` and `completion` columns, loss on the completion;
- vision: `messages` plus an `images` (or `image`) column, formatted by the
  processor's chat template with the images before the first user text
  (vision_data.py checks the images).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainer import chatterbot, easyvqa, vision_data
from trainer.config import DataArguments

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """The data cannot be trained on; the message says why and what to change."""


@dataclass
class TrainingData:
    train: Dataset
    eval: Dataset | None
    format: str
    name: str
    sha256: str

    @property
    def vision(self) -> bool:
        return self.format == "vision"

    @property
    def conversational(self) -> bool:
        """Rows are chat turns (formatted by the chat template), not plain text."""
        if self.format in ("messages", "vision"):
            return True
        return self.format == "prompt_completion" and isinstance(self.train[0]["prompt"], list)

    def manifest(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "format": self.format,
            "train_rows": len(self.train),
            "eval_rows": len(self.eval) if self.eval is not None else 0,
        }


def load(args: DataArguments, seed: int) -> TrainingData:
    dataset, digest, base_folder = _load_source(args, args.dataset_split)
    data_format = detect_format(dataset, args)
    dataset = _keep_training_columns(dataset, data_format, args)
    dataset = _drop_empty_rows(dataset, data_format, args)
    eval_folder, eval_what = base_folder, args.dataset
    if args.eval_split:
        evaluation, eval_folder = _load_eval_split(args)
        eval_what = f"{args.dataset} (split {args.eval_split})"
        _require_columns(evaluation, data_format, args, eval_what)
        evaluation = _keep_training_columns(evaluation, data_format, args)
        train = dataset
    else:
        train, evaluation = _hold_out(dataset, args.eval_size, seed, args.dataset)
    if args.max_train_rows:
        train = train.select(range(min(args.max_train_rows, len(train))))
    if evaluation is not None and args.max_eval_rows:
        evaluation = evaluation.select(range(min(args.max_eval_rows, len(evaluation))))
    # Images are typed and checked only in the rows that will be used.
    train = _prepare_images(train, data_format, base_folder, args.dataset)
    if evaluation is not None:
        evaluation = _prepare_images(evaluation, data_format, eval_folder, eval_what)
    log.info(
        "dataset %s (%s): %d training rows, %d eval rows",
        args.dataset,
        data_format,
        len(train),
        len(evaluation) if evaluation is not None else 0,
    )
    return TrainingData(train, evaluation, data_format, args.dataset, digest)


def _load_eval_split(args: DataArguments) -> tuple[Dataset, Path | None]:
    """`eval_split` names a split of a Hub dataset, or a local file or folder of eval rows
    (for easy-vqa: easy-vqa:test)."""
    if Path(args.eval_split).exists() or args.eval_split.startswith(easyvqa.PREFIX):
        evaluation, _, folder = _load_source(args, "train", source=args.eval_split)
        return evaluation, folder
    if args.dataset.startswith((chatterbot.PREFIX, easyvqa.PREFIX)) or Path(args.dataset).exists():
        raise DataError(
            f"eval_split {args.eval_split!r} is neither a file nor folder; with local data, "
            "point it at a file of eval rows or use eval_size"
        )
    evaluation, _, folder = _load_source(args, args.eval_split)
    return evaluation, folder


def _load_source(args: DataArguments, split: str, source: str | None = None) -> tuple[Dataset, str, Path | None]:
    """(rows, their sha256, the folder relative image paths start from)."""
    from datasets import Dataset, load_dataset

    source = source or args.dataset
    if source.startswith(easyvqa.PREFIX):
        try:
            dataset = Dataset.from_list(easyvqa.load_rows(source[len(easyvqa.PREFIX) :] or "train"))
        except easyvqa.EasyVqaError as error:
            raise DataError(str(error)) from None
        return dataset, _rows_digest(dataset), None  # absolute image paths
    if source.startswith(chatterbot.PREFIX):
        language = source[len(chatterbot.PREFIX) :] or "spanish"
        try:
            rows = chatterbot.load_pairs(language)
        except chatterbot.CorpusError as error:
            raise DataError(str(error)) from None
        dataset = Dataset.from_list(rows) if rows else Dataset.from_dict({"messages": []})
        _require_rows(dataset, source)
        return dataset, _rows_digest(dataset), None
    path = Path(source)
    if path.exists():
        files = _local_files(path)
        builder = LOCAL_BUILDERS[files[0].suffix.lower()]
        for file in files:
            if file.stat().st_size == 0:
                raise DataError(f"dataset file {file} is empty: no rows to train on")
        try:
            dataset = load_dataset(builder, data_files=[str(file) for file in files], split="train")
        except Exception as error:  # datasets wraps parse errors in several types
            raise DataError(f"could not read {source} as {builder}: {error}") from None
        _require_rows(dataset, source)
        digest = _files_digest(files) if len(files) == 1 else _rows_digest(dataset)
        return dataset, digest, path if path.is_dir() else path.parent
    if path.suffix.lower() in LOCAL_BUILDERS or source.startswith((".", "/")):
        raise DataError(f"dataset file {source} does not exist")
    log.info("loading %s (split %s) from the Hugging Face hub", source, split)
    try:
        dataset = load_dataset(source, args.dataset_config or None, split=split)
    except Exception as error:  # offline, unknown name, unknown split: one clear line
        raise DataError(f"could not load {source} (split {split}) from the Hugging Face hub: {error}") from None
    _require_rows(dataset, f"{source} (split {split})")
    return dataset, _rows_digest(dataset), None


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in LOCAL_BUILDERS:
            raise DataError(f"dataset file {path} is not one of {', '.join(LOCAL_BUILDERS)}")
        return [path]
    files = sorted(item for item in path.rglob("*") if item.is_file() and item.suffix.lower() in LOCAL_BUILDERS)
    if not files:
        raise DataError(f"dataset folder {path} has no {', '.join(LOCAL_BUILDERS)} files")
    builders = {LOCAL_BUILDERS[item.suffix.lower()] for item in files}
    if len(builders) > 1:
        raise DataError(f"dataset folder {path} mixes file types ({', '.join(sorted(builders))}): keep one")
    return files


def _require_rows(dataset: Dataset, what: str) -> None:
    if len(dataset) == 0:
        raise DataError(f"dataset {what} is empty: no rows to train on")


def detect_format(dataset: Dataset, args: DataArguments) -> str:
    columns = set(dataset.column_names)
    data_format = args.dataset_format
    if data_format == "auto":
        if "messages" in columns and vision_data.image_column(list(columns)):
            data_format = "vision"
        elif "messages" in columns:
            data_format = "messages"
        elif {"prompt", "completion"} <= columns:
            data_format = "prompt_completion"
        elif args.text_column in columns:
            data_format = "text"
        else:
            raise DataError(
                f"dataset {args.dataset} has columns {sorted(columns)}; the trainer needs a text column "
                f"(text_column: {args.text_column!r}), a 'messages' column (with an 'images' or 'image' column "
                "for vision), or 'prompt' and 'completion' columns"
            )
    _require_columns(dataset, data_format, args, args.dataset)
    return data_format


def _needed_columns(data_format: str, args: DataArguments, columns: list[str]) -> list[str]:
    if data_format == "vision":
        return ["messages", vision_data.image_column(columns) or "images"]
    return {"text": [args.text_column], "messages": ["messages"], "prompt_completion": ["prompt", "completion"]}[
        data_format
    ]


def _require_columns(dataset: Dataset, data_format: str, args: DataArguments, what: str) -> None:
    needed = _needed_columns(data_format, args, dataset.column_names)
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        hint = {
            "text": " (set text_column to the column that holds the text)",
            "vision": " (an 'images' column of lists or an 'image' column)",
        }.get(data_format, "")
        raise DataError(
            f"dataset {what} has no column {', '.join(repr(column) for column in missing)} for format "
            f"{data_format}; its columns are {sorted(dataset.column_names)}{hint}"
        )
    if data_format in ("messages", "vision"):
        _check_messages(dataset[0]["messages"], what)


def _check_messages(messages: object, what: str) -> None:
    ok = (
        isinstance(messages, list)
        and messages
        and all(isinstance(message, dict) and "role" in message and "content" in message for message in messages)
    )
    if not ok:
        raise DataError(
            f"dataset {what}: 'messages' must be a list of {{role, content}} objects, got {messages!r:.200}"
        )


def _keep_training_columns(dataset: Dataset, data_format: str, args: DataArguments) -> Dataset:
    keep = _needed_columns(data_format, args, dataset.column_names)
    return dataset.remove_columns([column for column in dataset.column_names if column not in keep])


def _drop_empty_rows(dataset: Dataset, data_format: str, args: DataArguments) -> Dataset:
    columns = _needed_columns(data_format, args, dataset.column_names)

    def has_content(row: dict) -> bool:
        return all(
            row[column] is not None and (not isinstance(row[column], str) or row[column].strip()) for column in columns
        )

    kept = dataset.filter(has_content)
    if len(kept) < len(dataset):
        log.warning("dropped %d rows with an empty %s", len(dataset) - len(kept), " or ".join(columns))
    if len(kept) == 0:
        raise DataError(f"dataset {args.dataset} has no rows with a non-empty {' / '.join(columns)}")
    return kept


def _prepare_images(dataset: Dataset, data_format: str, base_folder: Path | None, what: str) -> Dataset:
    if data_format != "vision":
        return dataset
    try:
        return vision_data.prepare(dataset, vision_data.image_column(dataset.column_names), base_folder, what)
    except vision_data.ImageDataError as error:
        raise DataError(str(error)) from None


def _hold_out(dataset: Dataset, eval_size: float, seed: int, what: str) -> tuple[Dataset, Dataset | None]:
    if eval_size <= 0:
        return dataset, None
    count = int(eval_size) if eval_size >= 1 else max(1, round(eval_size * len(dataset)))
    if count >= len(dataset):
        raise DataError(
            f"dataset {what} has {len(dataset)} rows: too few to hold out {count} for evaluation (eval_size)"
        )
    split = dataset.train_test_split(test_size=count, seed=seed, shuffle=True)
    return split["train"], split["test"]


def _files_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _rows_digest(dataset: Dataset) -> str:
    """sha256 of the rows as canonical JSON lines (Hub datasets, folders, chatterbot)."""
    digest = hashlib.sha256()
    for row in vision_data.undecoded(dataset):  # image bytes hashed, not decoded pictures
        line = json.dumps(row, sort_keys=True, ensure_ascii=False, default=vision_data.digest_value)
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
