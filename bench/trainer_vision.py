"""Training throughput and peak memory of the vision recipe
(trainer/configs/llama32-vision.yaml) on a Llama-3.2-11B-Vision-shaped model,
through the trainer's own code (the same loader, data check and SFTTrainer
that `python -m trainer` uses).

The model is MllamaForConditionalGeneration with Llama-3.2-11B-Vision-
Instruct's published configuration and random weights (bench/chat_gpu.py
builds it; no weights can be fetched, and speed does not depend on values),
saved once to --model-dir in bf16 and loaded by the trainer's loader, which
quantises the language model to nf4 and keeps the vision tower in bf16 (the
recipe's default). The data are synthetic LLaVA-like rows: one photo-like
JPEG each (--image-px, default 1120: 2 x 2 tiles of 560 px, the most Llama
3.2 Vision uses), a short question and an answer of log-normal length
(mean --answer-tokens), as `messages` + `images` paths checked and typed by
trainer/vision_data.py.

    python bench/trainer_vision.py --model-dir /tmp/mllama11b          # GPU: the recipe as shipped
    python bench/trainer_vision.py --variant vision --variant vision-4bit-tower=quantize_vision_tower=true
    python bench/trainer_vision.py --tiny --cpu --steps 3 --warmup-steps 1   # CPU, tiny Mllama: checks the code path

Measured as bench/trainer_throughput.py measures the text recipes (its
Result, stopwatch and table): non-padding text tokens/s (TRL's count; image
patches are not tokens) over the optimizer steps after --warmup-steps untimed
ones, samples/s, peak allocated / reserved GPU memory over the whole run, and
mean GPU utilisation. Record which card ran it.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "trainer"))

import chat_gpu  # noqa: E402  (the 11B-Vision shape, the checkpoint builder, versions, card)
import trainer_throughput as text_bench  # noqa: E402  (Result, stopwatch, table)
from trainer.config import Config, validate  # noqa: E402
from trainer.model import load_processing_class  # noqa: E402

from trainer import argparsing, recipe, vision_data  # noqa: E402

VISION_RECIPE = ROOT / "trainer" / "configs" / "llama32-vision.yaml"
# What a CPU cannot do of the GPU recipe (--cpu only).
CPU_OVERRIDES = {"use_cpu": True, "bf16": False, "compute_dtype": "float32", "double_quant": False,
                 "optim": "adamw_torch", "dataloader_num_workers": 0, "gradient_checkpointing": False}


def photo(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG with content (gradients + noise), as a photo in LLaVA's data would be."""
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y + seed * 37) % 256], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 25, pixels.shape), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def synthetic_rows(count: int, answer_tokens: float, image_px: int, tokenizer, folder: Path, seed: int = 0):
    """LLaVA-like rows: a question of ~12 words, an answer of log-normal length
    (many short, a long tail), each with one of 8 distinct JPEGs on disk."""
    from datasets import Dataset

    rng = random.Random(seed)
    specials = set(tokenizer.all_special_ids)
    words = [i for i in range(min(len(tokenizer), 40000)) if i not in specials]
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(8):
        path = folder / f"photo-{index}.jpg"
        path.write_bytes(photo((image_px, image_px), index))
        images.append(str(path))
    sigma = 0.6
    mu = math.log(answer_tokens) - sigma**2 / 2

    def text(length: int) -> str:
        return tokenizer.decode([rng.choice(words) for _ in range(length)])

    rows = {"messages": [], "images": []}
    for index in range(count):
        length = max(8, min(1500, int(rng.lognormvariate(mu, sigma))))
        rows["messages"].append([{"role": "user", "content": text(12) + "?"},
                                 {"role": "assistant", "content": text(length)}])
        rows["images"].append([images[index % len(images)]])
    dataset = Dataset.from_dict(rows)
    return vision_data.prepare(dataset, "images", None, "synthetic LLaVA-like rows")


def variant_config(name: str, overrides: dict, model_dir: Path, scratch: Path, steps: int, cpu: bool) -> Config:
    values = {
        "base_model": str(model_dir), "name": f"bench-{name}", "adapters_dir": str(scratch / "adapters"),
        "output_dir": str(scratch / f"run-{name}"), "report_to": "none", "save_steps": 10**9,
        "disable_tqdm": True, "eval_size": 0, "max_steps": steps, "logging_steps": 1,
        **(CPU_OVERRIDES if cpu else {}), **overrides,
    }
    argv = ["--config", str(VISION_RECIPE)]
    for key, value in values.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    config = argparsing.parse(argv)
    validate(config)
    return config


def run_variant(name: str, config: Config, model_dir: Path, rows, overrides: dict, warmup_steps: int):
    processor = load_processing_class(str(model_dir), vision=True)
    per_step = config.train.per_device_train_batch_size * config.train.gradient_accumulation_steps
    rows_trained = min(len(rows), max(config.train.max_steps, 0) * per_step) or len(rows)
    return text_bench.measure_training(name, "vision", config, model_dir, processor, rows, rows_trained, overrides,
                                       warmup_steps)


def parse_variant(text: str) -> tuple[str, dict]:
    """name=key=value,key=value (or just a name: the recipe as shipped)."""
    name, _, assignments = text.partition("=")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        overrides[key.strip()] = value.strip()
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="where the random model is saved (reused)")
    parser.add_argument("--tiny", action="store_true", help="the tiny Mllama shape instead of 11B")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU (with --tiny: a code-path check)")
    parser.add_argument("--steps", type=int, default=14, help="optimizer steps per variant (16 rows each)")
    parser.add_argument("--warmup-steps", type=int, default=4, help="untimed optimizer steps at the start")
    parser.add_argument("--answer-tokens", type=float, default=200, help="mean answer length in tokens")
    parser.add_argument("--image-px", type=int, default=chat_gpu.IMAGE_PX, help="side of the square photos")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="SmolLM2 tokenizer folder for the stand-in (default: the provisioned embedded model)")
    parser.add_argument("--variant", action="append", default=None,
                        help="name or name=key=value,key=value over the recipe (repeatable; default: vision)")
    args = parser.parse_args(argv)

    import torch

    from trainer.model import resolve_base_model

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    scratch = Path(tempfile.mkdtemp(prefix="trainer-vision-"))
    model_dir = args.model_dir or scratch / "model"
    tokenizer_source = args.tokenizer or Path(resolve_base_model("smollm2-135m-instruct")[0])
    print(f"card: {chat_gpu.card() if device == 'cuda' else 'CPU'}; {chat_gpu.versions()}", flush=True)
    if not (model_dir / "config.json").is_file():
        built = chat_gpu.build_checkpoint(model_dir, tokenizer_source, args.tiny, device)
        print(f"random {'tiny' if args.tiny else '11B-Vision-shaped'} Mllama: {built['parameters'] / 1e9:.2f} B "
              f"parameters, built in {built['build_s']:.0f} s, saved in {built['save_s']:.0f} s", flush=True)
    processor = load_processing_class(str(model_dir), vision=True)
    per_step = 16  # the recipe's 4 rows x 4 accumulation steps
    rows = synthetic_rows(args.steps * per_step, args.answer_tokens, args.image_px, processor.tokenizer,
                          scratch / "images")
    results = []
    for name, overrides in map(parse_variant, args.variant or ["vision"]):
        if args.cpu:
            overrides = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, **overrides}
        config = variant_config(name, overrides, model_dir, scratch, args.steps, args.cpu)
        results.append(run_variant(name, config, model_dir, rows, overrides, args.warmup_steps))
    shape = "tiny Mllama" if args.tiny else "Llama-3.2-11B-Vision shape"
    print(f"\n{shape}, random weights; {args.image_px} px photos, answers ~{args.answer_tokens:.0f} tokens; "
          f"{args.steps} steps of 16 rows")
    print(text_bench.table(results, chat_gpu.card() if device == "cuda" else "CPU", args.warmup_steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
