"""Our configuration → TRL's SFTConfig and SFTTrainer. The one place that knows
TRL's and transformers' argument names (pinned in pyproject.toml); the job
(train.py) and the throughput benchmark (bench/trainer_throughput.py) both
train through it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config import Config
from trainer.gpus import fsdp_launch
from trainer.model import is_vision_config, lora_config, run_vision_parts_without_autograd

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTConfig, SFTTrainer

log = logging.getLogger(__name__)


def use_bf16(config: Config) -> bool:
    import torch

    train = config.train
    if train.bf16 is not None:
        return train.bf16
    return not train.fp16 and not train.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def activation_offloading(config: Config) -> bool:
    """Offloading moves saved activations between a GPU and pinned CPU memory: on
    the CPU there is nowhere to offload to (TRL's context needs an accelerator)."""
    import torch

    train = config.train
    if train.activation_offloading and (train.use_cpu or not torch.cuda.is_available()):
        log.info("activation_offloading is for a GPU: off on the CPU")
        return False
    if train.activation_offloading and fsdp_launch():
        # FSDP already frees what it shards; TRL's offloading hooks are not made for its flat parameters.
        log.info("activation_offloading is off under FSDP")
        return False
    return train.activation_offloading


def report_to(config: Config) -> list[str]:
    wanted = [item for item in config.train.report_to if item != "none"]
    if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed (pip install 'trainer[reports]'): no TensorBoard logs")
        wanted.remove("tensorboard")
    return wanted or ["none"]


def sft_config(config: Config, output_dir: Path, text_field: str = "text") -> SFTConfig:
    from trl import SFTConfig

    train = config.train
    checkpointing_kwargs: dict[str, Any] | None = {"selective": True} if train.selective_checkpointing else None
    return SFTConfig(
        output_dir=str(output_dir),
        # what and how long
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        # data shaping (TRL)
        max_length=train.max_length,
        packing=train.packing,
        padding_free=train.padding_free,
        completion_only_loss=train.completion_only_loss,
        dataset_text_field=text_field,
        train_sampling_strategy=train.train_sampling_strategy,  # transformers 5: was group_by_length=True
        # optimisation
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        lr_scheduler_type=train.lr_scheduler_type,
        warmup_steps=train.warmup_steps,  # transformers 5: a fraction < 1 replaces warmup_ratio
        optim=train.optim,
        seed=train.seed,
        # memory and speed
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs=checkpointing_kwargs,
        activation_offloading=activation_offloading(config),
        use_liger_kernel=train.use_liger_kernel,
        bf16=use_bf16(config),
        fp16=train.fp16,
        use_cpu=train.use_cpu,
        dataloader_num_workers=train.dataloader_num_workers,
        # bookkeeping
        logging_steps=train.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        eval_strategy="no",  # evaluated before and after, by train.py
        report_to=report_to(config),
        disable_tqdm=train.disable_tqdm,
    )


def skip_checkpointing_callback(count: int) -> Any:
    """A callback that turns gradient checkpointing off on the last `count` decoder
    blocks once the Trainer has turned it on everywhere (in `train()`, just before
    `on_train_begin`).

    Why the last ones: backward runs them first, so their kept activations are
    freed before any other block is recomputed. The peak is then the end of the
    forward pass (every checkpointed block's input, plus the kept blocks'
    activations), and backward through a checkpointed block already holds one
    block's activations: so the first kept block costs about nothing, each
    further one about a block's activations (~0.6 GiB at 4096 tokens on a 7B)."""
    from transformers import TrainerCallback
    from transformers.modeling_layers import GradientCheckpointingLayer

    class SkipCheckpointing(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            blocks = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
            for block in blocks[max(0, len(blocks) - count) :]:
                block.gradient_checkpointing = False
            log.info("gradient checkpointing off on the last %d of %d blocks", min(count, len(blocks)), len(blocks))

    return SkipCheckpointing()


def compile_decoder_layers(model: Any, backend: str = "inductor") -> int:
    """torch.compile each decoder block in place (nn.Module.compile), inside the
    gradient-checkpointing wrapper, so the recompute runs the compiled code too.
    Dynamic shapes: packed batches change length every step. The blocks share one
    compiled graph (their parameters are inputs), so the recompile limit is only
    raised as a guard. Returns how many blocks were compiled."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    for name in ("recompile_limit", "cache_size_limit"):  # the limit's name changed in torch 2.6
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    blocks = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for block in blocks:
        block.compile(backend=backend, dynamic=True)
    log.info("torch.compile (%s) on %d decoder blocks", backend, len(blocks))
    return len(blocks)


def build_trainer(
    config: Config,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    output_dir: Path,
    text_field: str = "text",
    callbacks: list | None = None,
) -> SFTTrainer:
    from trl import SFTTrainer

    callbacks = list(callbacks or [])
    if config.train.gradient_checkpointing and config.train.gradient_checkpointing_skip_last:
        callbacks.append(skip_checkpointing_callback(config.train.gradient_checkpointing_skip_last))
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, output_dir, text_field),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,  # TRL 1.x: was tokenizer=
        peft_config=lora_config(config.lora, model),
        callbacks=callbacks or None,
    )
    if is_vision_config(model.config):
        frozen = run_vision_parts_without_autograd(model)
        log.info("frozen, run without autograd: %s", ", ".join(frozen))
    if config.train.compile_layers:  # after PEFT and Liger have swapped their modules in
        compile_decoder_layers(trainer.model)
    return trainer


def trained_tokens(trainer: SFTTrainer) -> int | None:
    """Non-padding tokens this process trained on (TRL 1.16 counts them per batch:
    the attention mask's sum, or the flattened length when padding-free)."""
    total = getattr(trainer, "_total_train_tokens", None)
    if total:
        return int(total)
    logged = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    return int(logged[-1]) if logged else None
