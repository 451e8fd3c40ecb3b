"""One process, one GPU, unless a launcher starts one process per GPU.

Run as `python -m trainer` on a host with several GPUs, transformers' Trainer
would wrap the model in nn.DataParallel, which TRL refuses ("SFTTrainer does
not support nn.DataParallel"), so the job would stop before its first step.
Several GPUs are used through `accelerate launch --num_processes N` (DDP:
docs/trainer.md), which sets WORLD_SIZE. Without it, the job keeps to the
first visible GPU and says how to use them all.

This must run before anything initialises CUDA (CUDA reads
CUDA_VISIBLE_DEVICES once), so the GPUs are counted through NVML, the
driver's management library, with ctypes: no torch, no CUDA context.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)


def nvml_device_count() -> int | None:
    """GPUs the driver knows, or None without an NVIDIA driver."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    count = ctypes.c_uint(0)
    try:
        return count.value if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else None
    finally:
        nvml.nvmlShutdown()


def keep_one_gpu_without_launcher() -> str | None:
    """Limits a process not started by a launcher to its first visible GPU;
    returns the device it kept, or None when nothing had to change."""
    if "WORLD_SIZE" in os.environ:  # accelerate launch / torchrun: one GPU per process already
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        count, first = nvml_device_count() or 0, "0"
    else:
        devices = [device.strip() for device in visible.split(",") if device.strip()]
        count, first = len(devices), devices[0] if devices else ""
    if count < 2:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = first
    log.warning(
        "%d GPUs are visible but the trainer was not started by a launcher: training on GPU %s alone. "
        "To train on all of them: accelerate launch --num_processes %d -m trainer --config …",
        count, first, count,
    )
    return first


def fsdp_launch() -> bool:
    """Started by `accelerate launch` with an FSDP config (it sets ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")
