"""One training job, start to finish: check the configuration and the data
before any model loads, train (or resume), measure before and after, publish."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trainer import data as data_module
from trainer import export, output, recipe, samples, vision_data
from trainer.config import Config, ConfigError, validate
from trainer.model import (describe_weights, is_vision_config, load_config, load_model, load_processing_class,
                           resolve_base_model)

log = logging.getLogger(__name__)


def run(config: Config) -> Path | None:
    """Trains and publishes the adapter; returns its folder (None on the
    non-main processes of a multi-GPU run)."""
    validate(config)
    adapters_dir, run_dir, name = Path(config.run.adapters_dir), config.run_dir, config.run.name
    output.check_target_free(adapters_dir, name, config.run.overwrite)
    output.check_writable(adapters_dir, "adapters folder")
    output.check_writable(run_dir, "run folder")
    if config.run.merged_dir and Path(config.run.merged_dir).exists() and not config.run.overwrite:
        raise FileExistsError(
            f"merged model {config.run.merged_dir} already exists: pick another merged_dir or pass --overwrite"
        )
    resume_from = _checkpoint_to_resume(config, run_dir)
    data = data_module.load(config.data, config.train.seed)  # data errors surface before a model loads

    load_path, recorded_base = resolve_base_model(config.model.base_model)
    vision = is_vision_config(load_config(load_path, config.model.trust_remote_code))
    if data.vision and not vision:
        raise data_module.DataError(
            f"dataset {data.name} has images but {config.model.base_model} is a text model: "
            "train a vision-language base (e.g. meta-llama/Llama-3.2-11B-Vision-Instruct) or drop the images"
        )
    started = time.monotonic()
    # The processor of a vision model (image preprocessing + tokenizer), else the tokenizer.
    tokenizer = load_processing_class(load_path, vision, config.model.trust_remote_code)
    model = load_model(load_path, config.model, config.train)
    log.info("loaded %s (%s) in %.1f s", load_path, config.model.quantization, time.monotonic() - started)

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = recipe.build_trainer(
        config, model, tokenizer, data.train, data.eval, run_dir, text_field=config.data.text_column
    )
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = _training_metrics(trainer, result)
    metrics.update(_eval_losses(trainer))
    sample_rows = _samples(config, trainer, tokenizer, data)
    adapter_state = _full_adapter_state(trainer)  # every process takes part under FSDP

    if not trainer.is_world_process_zero():
        trainer.accelerator.wait_for_everyone()
        return None
    _write_run_reports(run_dir, trainer.state.log_history)
    content = output.manifest(
        name=name,
        base_model=recorded_base,
        task="vision" if vision else "text",
        dataset=data.manifest(),
        hyperparameters=config.as_dict(),
        metrics=metrics,
        samples=sample_rows,
        run={
            "global_step": trainer.state.global_step,
            "base_weights": describe_weights(model),
            "resumed_from": resume_from.name if resume_from else None,
            "device": str(trainer.args.device),
            "run_dir": str(run_dir),
        },
    )

    def write_files(staging: Path) -> None:
        # adapter_config.json + adapter_model.safetensors
        trainer.model.save_pretrained(staging, state_dict=adapter_state)
        tokenizer.save_pretrained(staging)  # the processor's files too, for a vision base
        if config.run.ollama_from:
            (staging / "Modelfile").write_text(output.modelfile(config.run.ollama_from), encoding="utf-8")

    try:
        target = output.publish(adapters_dir, name, write_files, content, overwrite=config.run.overwrite)
    except OSError as error:  # the disk filled up while training: say where the work is
        if isinstance(error, FileExistsError):
            raise
        raise output.OutputNotWritable(f"the adapter could not be written to {adapters_dir} ({error.strerror}); "
                                       f"the run folder {run_dir} keeps its checkpoints: free space and run "
                                       "again with --resume") from error
    output.remove_checkpoints(run_dir)  # the adapter is out; optimizer states are large
    if config.run.merged_dir:
        export.merge(
            load_path, target, Path(config.run.merged_dir), config.model.trust_remote_code, config.run.overwrite
        )
    trainer.accelerator.wait_for_everyone()
    _log_summary(target, metrics)
    return target


def _checkpoint_to_resume(config: Config, run_dir: Path) -> Path | None:
    output.remove_stale_partials(Path(config.run.adapters_dir), config.run.name)
    if config.run.resume:
        checkpoint = output.latest_checkpoint(run_dir)
        if checkpoint is None:
            log.warning("--resume: no complete checkpoint in %s, starting from the beginning", run_dir)
        else:
            log.info("resuming from %s", checkpoint)
        return checkpoint
    if output.checkpoints(run_dir):
        raise ConfigError(
            f"run folder {run_dir} holds checkpoints of an unfinished run of {config.run.name!r}: "
            "pass --resume to continue it, or delete the folder to start over"
        )
    return None


def _training_metrics(trainer: Any, result: Any) -> dict[str, Any]:
    runtime = float(result.metrics.get("train_runtime", 0.0))
    tokens = recipe.trained_tokens(trainer)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "train_loss": float(result.training_loss),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_tokens": tokens,
        "tokens_per_second": round(tokens / runtime, 2) if tokens and runtime else None,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "runtime_seconds": round(runtime, 2),
        "steps": trainer.state.global_step,
        "peak_gpu_memory_gib": _peak_gpu_memory_gib(trainer),
    }


def _peak_gpu_memory_gib(trainer: Any) -> float | None:
    """The most GPU memory this process's tensors held (the main process's GPU under DDP/FSDP)."""
    import torch

    if trainer.args.use_cpu or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _eval_losses(trainer: Any) -> dict[str, Any]:
    """Eval loss of the base model (adapter switched off) and of base + adapter,
    both measured now, so an interrupted and resumed run reports the same pair."""
    if trainer.eval_dataset is None:
        return {"eval_loss_before": None, "eval_loss_after": None}
    with trainer.model.disable_adapter():
        before = trainer.evaluate(metric_key_prefix="eval_before")["eval_before_loss"]
    after = trainer.evaluate(metric_key_prefix="eval_after")["eval_after_loss"]
    return {"eval_loss_before": before, "eval_loss_after": after}


def _full_adapter_state(trainer: Any) -> dict | None:
    """Under FSDP each process holds a shard of the weights, the adapter's too: the
    whole state is gathered (every process must call this; the main one receives
    it, on the CPU). None otherwise: save_pretrained reads the weights itself."""
    if not trainer.is_fsdp_enabled:
        return None
    trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _samples(config: Config, trainer: Any, tokenizer: Any, data: data_module.TrainingData) -> list[dict[str, str]]:
    if not trainer.is_world_process_zero() or config.run.sample_max_new_tokens == 0:
        return []
    if trainer.is_fsdp_enabled:
        # Generating from sharded weights needs every process in step, token by
        # token; the main process alone would wait forever.
        log.info("sample generations are skipped under FSDP: load the adapter in the chat service to try it")
        return []
    if data.vision:
        return _vision_samples(config, trainer, tokenizer, data)
    prompts = config.run.sample_prompts
    if not prompts:
        return []
    kwargs = {
        "template": config.run.prompt_template,
        "use_chat_template": data.conversational,
        "max_new_tokens": config.run.sample_max_new_tokens,
    }
    before = samples.generate(trainer.model, tokenizer, prompts, adapter=False, **kwargs)
    after = samples.generate(trainer.model, tokenizer, prompts, adapter=True, **kwargs)
    return [{"prompt": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)]


def _vision_samples(config: Config, trainer: Any, processor: Any, data: data_module.TrainingData) -> list[dict]:
    """Answers before and after training to the first held-out rows (image + question),
    beside the dataset's own answer."""
    rows = data.eval if data.eval is not None else data.train
    rows = rows.select(range(min(config.run.sample_images, len(rows))))
    if len(rows) == 0:
        return []
    decoded = list(rows)
    kwargs = {"max_new_tokens": config.run.sample_max_new_tokens}
    before = samples.generate_for_rows(trainer.model, processor, decoded, adapter=False, **kwargs)
    after = samples.generate_for_rows(trainer.model, processor, decoded, adapter=True, **kwargs)
    described = [samples.describe_row(row) for row in vision_data.undecoded(rows)]
    return [{**row, "before": b, "after": a} for row, b, a in zip(described, before, after)]


def _write_run_reports(run_dir: Path, log_history: list[dict]) -> None:
    (run_dir / "log_history.json").write_text(json.dumps(log_history, indent=1) + "\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        log.info("matplotlib is not installed (pip install 'trainer[reports]'): no loss-curve PNG")
        return
    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    if not points:
        return
    figure, axes = pyplot.subplots(figsize=(6, 3.5))
    axes.plot(*zip(*points), marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    figure.tight_layout()
    figure.savefig(run_dir / "loss.png", dpi=100)
    pyplot.close(figure)


def _log_summary(target: Path, metrics: dict[str, Any]) -> None:
    shown = {
        key: metrics.get(key)
        for key in ("train_loss", "eval_loss_before", "eval_loss_after", "tokens_per_second", "runtime_seconds")
    }
    log.info("done: %s %s", target, json.dumps(shown))
