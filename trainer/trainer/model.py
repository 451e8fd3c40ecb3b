"""The frozen base model (4-bit by default), its tokenizer, and the LoRA adapter's configuration."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import EMBEDDED_MODEL, LoraArguments, ModelArguments, TrainArguments

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def resolve_base_model(name: str) -> tuple[str, str]:
    """(what to load, what the manifest records). The embedded model's name loads
    from MODELS_DIR (where the chat service provisions it) and is recorded by name,
    which is what the chat service reports as loaded; a local folder is recorded as
    an absolute path; a Hub id as itself."""
    if name == EMBEDDED_MODEL:
        folder = Path(os.environ.get("MODELS_DIR", ".cache/models")) / EMBEDDED_MODEL
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{EMBEDDED_MODEL} is not provisioned in {folder}: start the chat service once (make run), "
                "or set MODELS_DIR to the folder that holds it"
            )
        return str(folder), EMBEDDED_MODEL
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"base model folder {path} has no config.json")
        return str(path.resolve()), str(path.resolve())
    return name, name


def torch_dtype(name: str) -> Any:
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def device_map(train: TrainArguments) -> dict[str, Any]:
    """The whole model on one device: this process's GPU (DDP gives each process
    its own), or the CPU."""
    import torch
    from accelerate import PartialState

    if train.use_cpu or not torch.cuda.is_available():
        return {"": "cpu"}
    return {"": PartialState().local_process_index}


def quantization_config(args: ModelArguments) -> Any:
    from transformers import BitsAndBytesConfig

    if args.quantization in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=args.quantization,
            bnb_4bit_compute_dtype=torch_dtype(args.compute_dtype),
            bnb_4bit_use_double_quant=args.double_quant,
        )
    if args.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_config(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as error:  # not on the hub, no network, gated without HF_TOKEN
        raise FileNotFoundError(f"cannot load base model {path}: {error}") from None
    stale = getattr(config, "quantization_config", None)
    if isinstance(stale, dict) and stale.get("quant_method") == "gguf" and not any(Path(path).glob("*.gguf")):
        # A checkpoint converted from GGUF to plain safetensors can keep the GGUF
        # quantization_config in its config.json (the chat service's provisioned
        # SmolLM2 does); its weights are plain, and the stale entry would make
        # transformers refuse any other quantization.
        log.info("ignoring the stale GGUF quantization_config of %s (its weights are plain safetensors)", path)
        del config.quantization_config
    return config


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as error:  # not on the hub, no network, gated without HF_TOKEN
        raise FileNotFoundError(f"cannot load the tokenizer of {path}: {error}") from None
    if tokenizer.pad_token is None:
        # As the seed did for Llama 2, which has no pad token; the loss ignores padding.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(path: str, args: ModelArguments, train: TrainArguments) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    config = load_config(path, args.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        config=config,
        quantization_config=quantization_config(args),
        dtype=torch_dtype(args.compute_dtype),
        device_map=device_map(train),
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
    )
    model.config.use_cache = False  # the cache is useless in training and fights gradient checkpointing
    return model


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """The short names of the linear layers PEFT's "all-linear" picks (the output head excluded)."""
    import torch

    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head  # bitsandbytes' layers subclass Linear
    }
    return sorted(names)


def describe_weights(model: PreTrainedModel) -> str:
    """What the frozen base actually is in memory: nf4, fp4, int8 or its dtype."""
    if getattr(model, "is_loaded_in_4bit", False):
        return str(model.config.quantization_config.bnb_4bit_quant_type)
    if getattr(model, "is_loaded_in_8bit", False):
        return "int8"
    return str(model.dtype).removeprefix("torch.")


def lora_config(args: LoraArguments, model: PreTrainedModel | None = None) -> LoraConfig:
    from peft import LoraConfig

    targets: str | list[str] = args.lora_target_modules
    layers = None
    if args.lora_last_layers:
        if model is None:
            raise ValueError("lora_last_layers needs the model")
        count = model.config.get_text_config().num_hidden_layers
        layers = list(range(max(0, count - args.lora_last_layers), count))
        if targets == ["all-linear"]:  # PEFT takes a layer subset only with a list of names
            targets = linear_module_names(model)
    elif targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        layers_to_transform=layers,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
