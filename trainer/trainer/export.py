"""Optional export: base + adapter merged into one plain bf16 model, for
servers that cannot apply a LoRA adapter. Done on the CPU, so it never
competes with training for GPU memory; written beside its target and renamed
into place like the adapter."""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def merge(
    base_path: str, adapter_dir: Path, target: Path, trust_remote_code: bool = False, overwrite: bool = False
) -> Path:
    import torch
    from peft import PeftModel

    from trainer.model import is_vision_config, load_config, load_processing_class, model_class

    if target.exists() and not overwrite:
        raise FileExistsError(f"merged model {target} already exists: pick another merged_dir or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
    try:
        config = load_config(base_path, trust_remote_code)
        base = model_class(config).from_pretrained(
            base_path,
            config=config,
            dtype=torch.bfloat16,
            device_map={"": "cpu"},
            trust_remote_code=trust_remote_code,
        )
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(staging)
        vision = is_vision_config(config)
        load_processing_class(str(adapter_dir), vision, trust_remote_code).save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("merged bf16 model written to %s", target)
    return target
