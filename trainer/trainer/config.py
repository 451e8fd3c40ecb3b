"""The trainer's arguments: five dataclasses whose fields are the keys of a
config file and of the command line (one flat namespace, as in TRL's
`sft.py`). Every field has a help text: `python -m trainer --help` lists them.

Names follow today's libraries (transformers 5, TRL 1.x), so a key means what
the library's documentation says: `warmup_steps` below 1 is a fraction of the
total steps (transformers 5 removed `warmup_ratio`), and grouping by length is
`train_sampling_strategy: group_by_length` (it removed `group_by_length`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a client asks the chat service for (docs/adapters.md).
ADAPTER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The chat service's embedded model (vision-chat-service/embedded_model.py):
# a base_model of this name resolves to MODELS_DIR/<name>, and the manifest
# records the name, which is what the chat service reports as loaded.
EMBEDDED_MODEL = "smollm2-135m-instruct"
SEED_PROMPT = "¿Cómo puedo encontrar trabajo de ingeniero?"
DEFAULT_SAMPLE_PROMPTS = [SEED_PROMPT, "Hola, ¿cómo estás?", "¿Qué es el aprendizaje automático?"]


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


class ConfigError(ValueError):
    """A configuration the trainer refuses; the message says what to change."""


@dataclass
class RunArguments:
    name: str = field(
        default="", metadata=_help("adapter name, the folder under adapters_dir: [a-z0-9][a-z0-9._-]{0,63}")
    )
    adapters_dir: str = field(
        default_factory=lambda: os.environ.get("ADAPTERS_DIR", ".cache/adapters"),
        metadata=_help("where finished adapters go (env ADAPTERS_DIR; .cache/adapters natively, /adapters in docker)"),
    )
    output_dir: str = field(
        default="",
        metadata=_help(
            "run folder for checkpoints and TensorBoard logs; empty = <adapters_dir>/.runs/<name> (never served)"
        ),
    )
    resume: bool = field(default=False, metadata=_help("continue from the newest complete checkpoint in output_dir"))
    overwrite: bool = field(default=False, metadata=_help("replace an existing adapter of the same name"))
    sample_prompts: list[str] = field(
        default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS),
        metadata=_help("prompts generated before and after training, saved in the manifest"),
    )
    sample_max_new_tokens: int = field(default=64, metadata=_help("tokens generated per sample prompt (greedy)"))
    sample_images: int = field(
        default=3,
        metadata=_help(
            "vision data: held-out rows (image + question) generated before and after training, saved in the "
            "manifest (the text sample_prompts are for text data)"
        ),
    )
    prompt_template: str = field(
        default="",
        metadata=_help(
            "how a sample prompt is written for a text-column dataset, with {prompt}, e.g. '<s>[INST] {prompt} [/INST]'; "
            "empty = the tokenizer's chat template"
        ),
    )
    ollama_from: str = field(
        default="",
        metadata=_help(
            "write an Ollama Modelfile (FROM this tag + ADAPTER) beside the adapter, e.g. llama2:7b-chat-fp16; empty = none"
        ),
    )
    merged_dir: str = field(
        default="",
        metadata=_help(
            "also write base + adapter merged into one bf16 model in this folder (merged on the CPU); empty = no"
        ),
    )
    log_level: str = field(
        default_factory=lambda: os.environ.get("LOG_LEVEL", "INFO"), metadata=_help("logging level (env LOG_LEVEL)")
    )


@dataclass
class ModelArguments:
    base_model: str = field(
        default="",
        metadata=_help(
            f"Hugging Face id or local folder of the base model; '{EMBEDDED_MODEL}' = MODELS_DIR/{EMBEDDED_MODEL}"
        ),
    )
    quantization: str = field(
        default="nf4",
        metadata=_help(
            "weights of the frozen base: nf4 or fp4 (4-bit, QLoRA), int8, or none",
            choices=["nf4", "fp4", "int8", "none"],
        ),
    )
    compute_dtype: str = field(
        default="float16",
        metadata=_help(
            "dtype of the 4-bit matmuls and of the unquantised layers", choices=["float16", "bfloat16", "float32"]
        ),
    )
    double_quant: bool = field(
        default=False, metadata=_help("quantise the 4-bit scales too (saves ~0.4 bit per weight)")
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata=_help(
            "attention kernel: sdpa, sdpa_varlen (packed rows through PyTorch's varlen FlashAttention, "
            "sdpa otherwise), eager, flash_attention_2, flex_attention"
        ),
    )
    quantize_vision_tower: bool = field(
        default=False,
        metadata=_help(
            "vision-language bases: quantise the vision tower and projector too (default: only the language "
            "model; the frozen vision part stays in compute_dtype)"
        ),
    )
    trust_remote_code: bool = field(default=False, metadata=_help("run model code shipped with the checkpoint"))


@dataclass
class DataArguments:
    dataset: str = field(
        default="",
        metadata=_help(
            "Hub dataset name, a local .jsonl/.json/.parquet/.csv file or folder, chatterbot:<language> "
            "(pairs from the chatterbot-corpus package, e.g. chatterbot:spanish), or easy-vqa:<train|test> "
            "(image + question + answer rows from the easy-vqa package)"
        ),
    )
    dataset_config: str = field(default="", metadata=_help("Hub dataset configuration (subset) name"))
    dataset_split: str = field(default="train", metadata=_help("split to train on"))
    dataset_format: str = field(
        default="auto",
        metadata=_help(
            "text (one column of formatted text), messages (chat), prompt_completion, vision (messages + an "
            "images or image column), or auto (by the columns present)",
            choices=["auto", "text", "messages", "prompt_completion", "vision"],
        ),
    )
    text_column: str = field(default="text", metadata=_help("the column of a text-format dataset"))
    eval_split: str = field(
        default="", metadata=_help("a split of the dataset to evaluate on; empty = hold out eval_size rows")
    )
    eval_size: float = field(
        default=0.1, metadata=_help("held-out eval rows: a fraction (<1) or a count (>=1); 0 = no eval")
    )
    max_train_rows: int = field(default=0, metadata=_help("use only the first N training rows (0 = all)"))
    max_eval_rows: int = field(default=0, metadata=_help("use only the first N eval rows (0 = all)"))


@dataclass
class LoraArguments:
    lora_r: int = field(default=64, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=16, metadata=_help("LoRA scaling numerator (scale = alpha / r)"))
    lora_dropout: float = field(default=0.1, metadata=_help("dropout on the LoRA input (0 skips the dropout kernel)"))
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata=_help("module names that get adapters, or [all-linear]; [q_proj, v_proj] is PEFT's Llama default"),
    )
    lora_last_layers: int = field(
        default=0,
        metadata=_help(
            "adapt only the last N transformer blocks (0 = all); backward then stops there, which is what makes CPU runs quick"
        ),
    )


@dataclass
class TrainArguments:
    num_train_epochs: float = field(default=1.0, metadata=_help("passes over the training rows"))
    max_steps: int = field(default=-1, metadata=_help("stop after this many optimizer steps (-1 = the epochs decide)"))
    per_device_train_batch_size: int = field(default=4, metadata=_help("rows (or packed sequences) per step and GPU"))
    per_device_eval_batch_size: int = field(default=4, metadata=_help("rows per eval step"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    max_length: int = field(default=1024, metadata=_help("tokens per row (truncated), or per packed sequence"))
    packing: bool = field(
        default=False, metadata=_help("pack rows into max_length sequences (best-fit, no cross-row attention)")
    )
    padding_free: bool = field(default=False, metadata=_help("flatten each batch into one sequence without padding"))
    completion_only_loss: bool | None = field(
        default=None, metadata=_help("loss on the completion only (default: yes for prompt_completion data)")
    )
    train_sampling_strategy: str = field(
        default="random",
        metadata=_help(
            "order of training rows: random, sequential, group_by_length",
            choices=["random", "sequential", "group_by_length"],
        ),
    )
    learning_rate: float = field(default=2e-4, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    lr_scheduler_type: str = field(default="cosine", metadata=_help("learning-rate schedule (transformers' names)"))
    warmup_steps: float = field(default=0.0, metadata=_help("warm-up: steps, or a fraction of all steps when < 1"))
    optim: str = field(default="paged_adamw_32bit", metadata=_help("optimizer (transformers' names)"))
    gradient_checkpointing: bool = field(
        default=True, metadata=_help("recompute activations in backward to save memory")
    )
    gradient_checkpointing_skip_last: int = field(
        default=0,
        metadata=_help(
            "with gradient_checkpointing, the last N transformer blocks keep their activations instead of "
            "recomputing them (0 = every block recomputes): less recompute for ~1/num_layers of the "
            "no-checkpointing activation memory per block"
        ),
    )
    selective_checkpointing: bool = field(
        default=False, metadata=_help("TRL's selective checkpointing: keep matmul outputs, recompute the cheap ops")
    )
    activation_offloading: bool = field(default=False, metadata=_help("offload saved activations to CPU memory (TRL)"))
    compile_layers: bool = field(
        default=False,
        metadata=_help(
            "torch.compile every decoder block (inductor, dynamic shapes): fuses the small ops of norms, RoPE, "
            "SwiGLU and LoRA and cuts Python overhead; the first steps pay the compilation"
        ),
    )
    use_liger_kernel: bool = field(
        default=False, metadata=_help("Liger's fused Triton kernels (GPU; package liger-kernel)")
    )
    bf16: bool | None = field(
        default=None, metadata=_help("bf16 mixed precision (default: on for a GPU that supports it)")
    )
    fp16: bool = field(default=False, metadata=_help("fp16 mixed precision"))
    use_cpu: bool = field(default=False, metadata=_help("train on the CPU even when a GPU is present"))
    logging_steps: float = field(default=10, metadata=_help("log every N steps (or a fraction of all steps)"))
    save_steps: float = field(default=100, metadata=_help("checkpoint every N steps (or a fraction of all steps)"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints kept in the run folder"))
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"], metadata=_help("loggers: tensorboard, none, ...")
    )
    dataloader_num_workers: int = field(default=0, metadata=_help("data loader worker processes"))
    seed: int = field(default=42, metadata=_help("random seed (data split, init, order)"))
    disable_tqdm: bool = field(default=False, metadata=_help("hide the progress bar"))


SECTIONS: tuple[type, ...] = (RunArguments, ModelArguments, DataArguments, LoraArguments, TrainArguments)


@dataclass
class Config:
    run: RunArguments
    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    train: TrainArguments

    def as_dict(self) -> dict[str, Any]:
        """The whole configuration as one flat mapping (the manifest's `hyperparameters`)."""
        flat: dict[str, Any] = {}
        for section in (self.run, self.model, self.data, self.lora, self.train):
            flat.update(dataclasses.asdict(section))
        return flat

    @property
    def run_dir(self) -> Path:
        return (
            Path(self.run.output_dir) if self.run.output_dir else Path(self.run.adapters_dir) / ".runs" / self.run.name
        )

    @property
    def adapter_dir(self) -> Path:
        return Path(self.run.adapters_dir) / self.run.name


def validate(config: Config) -> None:
    """Refuses what would fail late (after loading a model) or silently do the wrong thing."""
    run, model, data, train = config.run, config.model, config.data, config.train
    if not run.name:
        raise ConfigError("`name` is required: the adapter's folder name, e.g. --name my-adapter")
    if not ADAPTER_NAME.fullmatch(run.name):
        raise ConfigError(
            f"`name` {run.name!r} must match [a-z0-9][a-z0-9._-]{{0,63}} (it is the adapter's folder name)"
        )
    if not model.base_model:
        raise ConfigError("`base_model` is required: a Hugging Face id or a local folder")
    if not data.dataset:
        raise ConfigError("`dataset` is required: a Hub name, a local file or folder, or chatterbot:<language>")
    if train.bf16 and train.fp16:
        raise ConfigError("`bf16` and `fp16` are both true: pick one")
    if train.padding_free and not train.packing and train.max_length:
        raise ConfigError("`padding_free` without `packing` does not truncate to max_length: enable `packing` too")
    if train.packing and train.train_sampling_strategy == "group_by_length":
        raise ConfigError("`packing` makes rows equally long: use train_sampling_strategy random with it")
    if data.eval_size < 0:
        raise ConfigError("`eval_size` must be >= 0")
    if run.sample_images < 0:
        raise ConfigError("`sample_images` must be >= 0")
    if run.sample_max_new_tokens < 0:
        raise ConfigError("`sample_max_new_tokens` must be >= 0")
    if run.prompt_template and "{prompt}" not in run.prompt_template:
        raise ConfigError("`prompt_template` must contain {prompt}")
    if config.lora.lora_r < 1:
        raise ConfigError("`lora_r` must be >= 1")
    if train.gradient_checkpointing_skip_last < 0:
        raise ConfigError("`gradient_checkpointing_skip_last` must be >= 0")
    if config.lora.lora_last_layers < 0:
        raise ConfigError("`lora_last_layers` must be >= 0")
