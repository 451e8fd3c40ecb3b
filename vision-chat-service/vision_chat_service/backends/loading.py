"""Loads a Hugging Face checkpoint for the transformers backend, text or vision.

The configuration decides: one with a vision part (Mllama, Idefics3/SmolVLM,
Qwen2-VL, LLaVA, Gemma 3 …) loads with AutoModelForImageTextToText and its
AutoProcessor, anything else with AutoModelForCausalLM and its tokenizer. No
per-family code beyond that: the processor and its chat template know how the
family wants images in the prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                          AutoTokenizer)

from ..config import Settings
from ..errors import BackendUnavailable
from .prompts import TextPrompter, VisionPrompter

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    prompter: TextPrompter | VisionPrompter
    family: str  # config.model_type: "llama", "mllama", "idefics3", …
    context_length: int
    dtype: torch.dtype  # what floating inputs (pixel values) must be cast to


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def load_model(path: str | Path, settings: Settings, device: str) -> LoadedModel:
    cache_dir = settings.models_dir / "huggingface"
    config = AutoConfig.from_pretrained(path, cache_dir=cache_dir)
    # bf16 halves memory and is what these models are trained in; CPUs without
    # bf16 units run it slower than fp32, so CPUs get fp32.
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs = {"dtype": dtype, "cache_dir": cache_dir, **_quantization(settings.chat_quantization, device, dtype)}
    if getattr(config, "vision_config", None) is not None:
        processor = AutoProcessor.from_pretrained(path, cache_dir=cache_dir)
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        prompter: TextPrompter | VisionPrompter = VisionPrompter(processor, config.model_type)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, cache_dir=cache_dir)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        prompter = TextPrompter(tokenizer)
    if "quantization_config" not in kwargs:
        model = model.to(device)  # a quantized model is placed by device_map while it loads
    text_config = config.get_text_config()
    context = int(getattr(text_config, "max_position_embeddings", 0) or 0)
    return LoadedModel(model=model.eval(), prompter=prompter, family=config.model_type, context_length=context,
                       dtype=dtype)


def _quantization(setting: str, device: str, dtype: torch.dtype) -> dict:
    if setting == "none":
        return {}
    try:
        import bitsandbytes  # noqa: F401  (only checked for: transformers imports it itself)
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise BackendUnavailable("CHAT_QUANTIZATION=4bit needs bitsandbytes (pip install bitsandbytes), "
                                 "which this installation lacks") from None
    if device != "cuda":
        log.warning("CHAT_QUANTIZATION=4bit on %s: bitsandbytes runs NF4 on CPUs, but slower than fp32", device)
    # NF4 with double quantization: the QLoRA recipe, so an adapter trained with
    # QLoRA is served on the base exactly as it was trained.
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype)
    return {"quantization_config": config, "device_map": {"": device}}
