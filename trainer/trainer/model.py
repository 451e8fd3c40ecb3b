"""The frozen base model (4-bit by default), its tokenizer or processor, and the
LoRA adapter's configuration.

Vision-language bases (a config with a `vision_config`: Mllama, Qwen2-VL,
Idefics3 …) load as image-text-to-text models with their processor. Their
adapter goes on the language model only, and by default only the language
model is quantised: the vision tower and projector are small (~0.9 B of
Llama 3.2 Vision's 10.7 B), frozen, and 4-bit rounding of the image features
costs quality that no adapter on the text side can win back."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import EMBEDDED_MODEL, LoraArguments, ModelArguments, TrainArguments
from trainer.gpus import fsdp_launch

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


def quantization_config(args: ModelArguments, skip_modules: list[str] | None = None) -> Any:
    """bitsandbytes settings; `skip_modules` stay in compute dtype (None: transformers' default, the output head)."""
    from transformers import BitsAndBytesConfig

    if args.quantization in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=args.quantization,
            bnb_4bit_compute_dtype=torch_dtype(args.compute_dtype),
            bnb_4bit_use_double_quant=args.double_quant,
            llm_int8_skip_modules=skip_modules,  # despite the name, read by the 4-bit path too
            # FSDP shards only floating-point tensors: the packed 4-bit weights are then
            # stored as compute-dtype elements (same bytes), so it can flatten and shard
            # them with the rest (bitsandbytes' FSDP-QLoRA).
            bnb_4bit_quant_storage=torch_dtype(args.compute_dtype) if fsdp_launch() else None,
        )
    if args.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    return None


def is_vision_config(config: Any) -> bool:
    """Whether a checkpoint is a vision-language model (it has a vision tower)."""
    return getattr(config, "vision_config", None) is not None


def decoder_path(model: PreTrainedModel) -> str:
    """The dotted name of the language model inside a vision-language model
    (Mllama: model.language_model, Idefics3: model.text_model)."""
    decoder = model.get_decoder()
    return next(name for name, module in model.named_modules() if module is decoder)


def parts_beside_decoder(model: PreTrainedModel) -> list[str]:
    """Dotted names of what sits beside the language model: the vision tower and
    projector (Mllama: model.vision_model, model.multi_modal_projector)."""
    decoder = decoder_path(model)
    parent = decoder.rpartition(".")[0]
    container = model.get_submodule(parent) if parent else model
    prefix = f"{parent}." if parent else ""
    return [prefix + name for name, _ in container.named_children() if prefix + name != decoder]


def vision_parts(config: Any, trust_remote_code: bool = False) -> list[str]:
    """parts_beside_decoder() before loading, found on a weightless (meta) copy of the model."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    return parts_beside_decoder(skeleton)


def run_vision_parts_without_autograd(model: PreTrainedModel) -> list[str]:
    """Makes the frozen vision tower and projector run under torch.no_grad().

    Why: to train with gradient checkpointing, PEFT and TRL call
    enable_input_require_grads(), which (transformers 5) hooks the input
    embeddings of every sub-model, the vision tower's patch embedding too. From
    there autograd records the whole vision tower: it keeps the activations of
    Llama 3.2 Vision's 40 vision layers over 4 tiles x 1601 patches per image
    and runs their backward, for weights that have no adapter and get no update.
    The cross-attention adapters need the image features' values, not their
    gradients, so nothing is lost. Measured on an 11B-Vision shape (H200,
    bench/trainer_vision.py): see bench/results/trainer_vision_h200_*."""
    import torch

    names = parts_beside_decoder(model)
    for name in names:
        module = model.get_submodule(name)
        module.forward = torch.no_grad()(module.forward)
    return names


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
    return pad_for_training(tokenizer)


def pad_for_training(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A pad token and right padding, as training batches need them."""
    if tokenizer.pad_token is None:
        # As the seed did for Llama 2, which has no pad token; the loss ignores padding.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_processor(path: str, trust_remote_code: bool = False) -> Any:
    """A vision-language model's processor (image preprocessing + its tokenizer)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise FileNotFoundError(f"cannot load the processor of {path}: {error}") from None
    pad_for_training(processor.tokenizer)
    return processor


def load_processing_class(path: str, vision: bool, trust_remote_code: bool = False) -> Any:
    """What turns rows into tensors: the processor of a vision model, else the tokenizer."""
    return load_processor(path, trust_remote_code) if vision else load_tokenizer(path, trust_remote_code)


def model_class(config: Any) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if is_vision_config(config) else AutoModelForCausalLM


def load_model(path: str, args: ModelArguments, train: TrainArguments) -> PreTrainedModel:
    if args.attn_implementation == VARLEN_ATTENTION:
        register_varlen_attention()
    config = load_config(path, args.trust_remote_code)
    skip = None
    if is_vision_config(config) and not args.quantize_vision_tower:
        skip = [*vision_parts(config, args.trust_remote_code), "lm_head"]
        if args.quantization != "none":
            log.info("kept in %s, not quantised: %s", args.compute_dtype, ", ".join(skip))
    model = model_class(config).from_pretrained(
        path,
        config=config,
        quantization_config=quantization_config(args, skip),
        dtype=torch_dtype(args.compute_dtype),
        device_map=device_map(train),
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
    )
    # The cache is useless in training and fights gradient checkpointing.
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    return model


# Packed rows through a variable-length FlashAttention kernel (attn_implementation: sdpa_varlen).
#
# With packing, sdpa gets a dense block-diagonal mask of the whole packed
# sequence: it computes every query-key pair of the T x T square (4096 x 4096 a
# step in the fast recipe) in the masked memory-efficient kernel, and throws
# away ~90 % of them (guanaco's rows average ~380 tokens). The varlen kernel
# takes the row boundaries instead (cu_seq_lens, which TRL's padding-free
# collator puts in every batch) and computes each row's causal triangle only:
# no mask, no cross-row work, no cross-row attention. PyTorch ships it
# (torch.nn.attention.varlen, FlashAttention 2 on sm80+), so no flash-attn
# build is needed. Anything else (rows with padding, eval batches, the CPU,
# fp32) takes plain sdpa with transformers' mask, so the name is a drop-in
# replacement for sdpa.
VARLEN_ATTENTION = "sdpa_varlen"


# How this torch spells causal varlen attention, found once by register_varlen_attention()
# (outside any torch.compile'd code: dynamo would break the graph on `inspect`).
_VARLEN_CALL: str | None = None


def _varlen_call() -> str:
    """'window' (torch >= 2.10: causal is a (-1, 0) window), 'is_causal' (torch 2.9) or
    'aten' (older: the op under both)."""
    import inspect

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.9
        return "aten"
    parameters = inspect.signature(varlen_attn).parameters
    if "window_size" in parameters:
        return "window"
    if "is_causal" in parameters:
        return "is_causal"
    return "aten"


def _flash_varlen(query: Any, key: Any, value: Any, cu_seq_lens: Any, max_length: Any, scale: float | None) -> Any:
    """Causal attention over packed rows: (T, heads, head_dim) in and out."""
    import torch

    global _VARLEN_CALL
    if _VARLEN_CALL is None:
        _VARLEN_CALL = _varlen_call()
    if _VARLEN_CALL == "window":
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(
            query, key, value, cu_seq_lens, cu_seq_lens, max_length, max_length, scale=scale, window_size=(-1, 0)
        )
    if _VARLEN_CALL == "is_causal":
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(
            query, key, value, cu_seq_lens, cu_seq_lens, max_length, max_length, is_causal=True, scale=scale
        )
    # The op under both (differentiable): output, logsumexp, rng state, ...
    return torch.ops.aten._flash_attention_forward(
        query, key, value, cu_seq_lens, cu_seq_lens, max_length, max_length, 0.0, True, False, scale=scale
    )[0]


def varlen_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention interface: query/key/value (batch, heads, T, head_dim) in,
    (batch, T, heads, head_dim) out, as sdpa_attention_forward."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    packed = (
        cu_seq_lens is not None
        and query.shape[0] == 1  # padding-free: the whole batch is one flattened row
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and not (dropout and module.training)
    )
    if not packed:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: one key/value head per query head
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    max_length = kwargs.get("max_length_q")  # a Python int from TRL's collator
    if max_length is None:
        max_length = cu_seq_lens.diff().max()
    if isinstance(max_length, torch.Tensor):
        max_length = int(max_length)
    # An int (or, under torch.compile with dynamic shapes, a symbolic one) is passed
    # as is: int() would pin a compiled layer to one value and recompile per batch.
    output = _flash_varlen(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seq_lens.to(device=query.device, dtype=torch.int32),
        max_length,
        scaling,
    )
    return output.unsqueeze(0), None


def register_varlen_attention() -> None:
    """Makes attn_implementation sdpa_varlen known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    global _VARLEN_CALL
    _VARLEN_CALL = _varlen_call()
    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    # sdpa's mask, for the batches that fall back to sdpa; packed batches ignore it.
    AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)


def linear_module_names(model: PreTrainedModel) -> list[str]:
    """The short names of the linear layers PEFT's "all-linear" picks (the output head excluded)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
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


def language_model_targets(args: LoraArguments, model: PreTrainedModel) -> str:
    """PEFT target_modules for the language model of a vision-language model
    only: a regex over full module names (PEFT full-matches a string), so the
    vision tower's q_proj/fc layers get no adapter. The last-N-layers choice
    goes into the regex too (PEFT ignores layers_to_transform with a regex)."""
    import re

    decoder = decoder_path(model)
    names = args.lora_target_modules
    if names == ["all-linear"]:
        names = linear_module_names(model.get_decoder())
    layers = r"\d+"
    if args.lora_last_layers:
        count = model.config.get_text_config().num_hidden_layers
        layers = "|".join(str(index) for index in range(max(0, count - args.lora_last_layers), count))
    return rf"{re.escape(decoder)}\.layers\.(?:{layers})\..*\.(?:{'|'.join(map(re.escape, names))})"


def lora_config(args: LoraArguments, model: PreTrainedModel | None = None) -> LoraConfig:
    from peft import LoraConfig

    targets: str | list[str] = args.lora_target_modules
    layers = None
    if model is not None and is_vision_config(model.config):
        targets = language_model_targets(args, model)
    elif args.lora_last_layers:
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
