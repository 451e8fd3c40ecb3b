"""Training throughput of the seed's QLoRA recipe against the fast one, on one
card, in one process, through the trainer's own code (trainer/trainer/recipe.py
builds the same SFTTrainer that `python -m trainer` does).

The model is Llama-2-7B-shaped with random weights (no download: a random
model costs what the real one does), saved once to --model-dir and loaded by
the trainer's loader, which quantises it to nf4. The data are 1000 synthetic
rows with guanaco-like lengths (log-normal, mean ~380 tokens), written as text
over a synthetic one-word-one-token vocabulary, so the recipes' own
tokenisation, truncation, grouping and packing run as they do on guanaco.

    python bench/trainer_throughput.py                 # GPU: seed, then fast
    python bench/trainer_throughput.py --smoke         # CPU, tiny Llama, < 1 min: checks the code path
    python bench/trainer_throughput.py --variant fast-liger=fast:use_liger_kernel=true \\
        --variant fast-4k=fast:max_length=4096,per_device_train_batch_size=1

Prints one row per recipe: non-padding tokens/s, samples/s, peak GPU memory
(allocated and reserved), epoch time. Anchors (DESIGN.md §6, H200): seed
2.4-2.5 k tokens/s at 5.9 GiB; packing + all-linear 5.4 k at 6.4 GiB. Goal:
fast >= 3x seed tokens/s at no more memory. Record which card ran it.

Needs, beside torch/transformers/peft/accelerate: trl, bitsandbytes, datasets
(see docs/trainer.md for the exact versions). The trainer package is imported
from this checkout (trainer/), no install needed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "trainer"))

from trainer.config import Config, validate  # noqa: E402
from trainer.model import describe_weights, load_model, load_tokenizer  # noqa: E402

from trainer import argparsing, recipe  # noqa: E402

CONFIGS = ROOT / "trainer" / "configs"
RECIPES = {"seed": CONFIGS / "seed-llama2-guanaco.yaml", "fast": CONFIGS / "fast-llama2-guanaco.yaml"}
VOCAB = 32000  # Llama 2's
SPECIAL = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama 2
GIB = 1024**3

LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    vocab_size=VOCAB,
)
TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    vocab_size=VOCAB,
)
# What a CPU cannot do of the GPU recipes (smoke mode only): mixed precision,
# fp16/bf16 matmuls, paged optimizers, fused CUDA optimizers, worker processes.
CPU_OVERRIDES = {
    "use_cpu": True,
    "bf16": False,
    "fp16": False,
    "compute_dtype": "float32",
    "optim": "adamw_torch",
    "dataloader_num_workers": 0,
    "use_liger_kernel": False,
}


@dataclass
class Result:
    name: str
    tokens: int
    rows: int
    steps: int
    seconds: float
    peak_allocated: float | None
    peak_reserved: float | None
    final_loss: float | None
    weights: str
    overrides: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def samples_per_second(self) -> float:
        return self.rows / self.seconds


def synthetic_lengths(count: int, mean: float, seed: int) -> list[int]:
    """Log-normal lengths like guanaco's (many short rows, a long tail), mean ~`mean`."""
    rng = random.Random(seed)
    sigma = 0.7
    mu = math.log(mean) - sigma**2 / 2
    return [max(16, min(4000, int(rng.lognormvariate(mu, sigma)))) for _ in range(count)]


def synthetic_texts(count: int, mean: float, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    return [
        " ".join(f"w{rng.randrange(VOCAB - len(SPECIAL))}" for _ in range(length - 1))  # +1 token: EOS, added by TRL
        for length in synthetic_lengths(count, mean, seed)
    ]


def synthetic_tokenizer():
    """One word, one token: `w123` is id 126. Llama 2's special tokens and ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL)}
    vocab.update({f"w{index}": index + len(SPECIAL) for index in range(VOCAB - len(SPECIAL))})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )


def make_model_dir(folder: Path, shape: dict, on_gpu: bool) -> Path:
    """A random Llama of `shape`, saved as a plain fp16 checkpoint the trainer loads by path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        print(f"reusing the random model in {folder}", flush=True)
        return folder
    started = time.perf_counter()
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    dtype = torch.float16 if on_gpu else torch.float32
    with torch.device("cuda" if on_gpu else "cpu"):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    synthetic_tokenizer().save_pretrained(folder)
    del model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    print(f"random model saved to {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def recipe_config(base: str, overrides: dict, model_dir: Path, scratch: Path, smoke: bool) -> Config:
    argv = ["--config", str(RECIPES[base])]
    values = {
        "base_model": str(model_dir),
        "name": f"bench-{base}",
        "adapters_dir": str(scratch / "adapters"),
        "output_dir": str(scratch / f"run-{base}"),
        "report_to": "none",
        "save_steps": 10**9,
        "disable_tqdm": True,
        "eval_size": 0,
        "sample_prompts": "",
        "ollama_from": "",
        **(CPU_OVERRIDES if smoke else {}),
        **overrides,
    }
    for key, value in values.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    config = argparsing.parse(argv)
    validate(config)
    return config


def run_recipe(name: str, config: Config, model_dir: Path, texts: list[str], overrides: dict) -> Result:
    import torch
    from datasets import Dataset

    on_gpu = torch.cuda.is_available() and not config.train.use_cpu
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), config.model, config.train)
    weights = describe_weights(model)
    trainer = recipe.build_trainer(
        config, model, tokenizer, Dataset.from_dict({"text": texts}), None, config.run_dir, text_field="text"
    )
    if on_gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = Result(
        name=name,
        tokens=recipe.trained_tokens(trainer) or 0,
        rows=len(texts),
        steps=trainer.state.global_step,
        seconds=seconds,
        peak_allocated=torch.cuda.max_memory_allocated() / GIB if on_gpu else None,
        peak_reserved=torch.cuda.max_memory_reserved() / GIB if on_gpu else None,
        final_loss=losses[-1] if losses else None,
        weights=weights,
        overrides=overrides,
    )
    del trainer, model
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def parse_variant(text: str) -> tuple[str, str, dict]:
    """name=recipe:key=value,key=value (or just a recipe name)."""
    name, _, spec = text.partition("=") if "=" in text.split(":")[0] else (text, "", text)
    base, _, assignments = spec.partition(":")
    if base not in RECIPES:
        raise SystemExit(f"variant {text!r}: recipe must be one of {', '.join(RECIPES)}")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        overrides[key.strip()] = value.strip()
    return name or base, base, overrides


def table(results: list[Result], device: str) -> str:
    gib = lambda value: f"{value:.2f}" if value is not None else "n/a"  # noqa: E731
    lines = [
        f"device: {device}",
        f"{'recipe':<14} {'tokens/s':>10} {'samples/s':>10} {'peak alloc GiB':>15} {'peak reserved GiB':>18} "
        f"{'epoch s':>9} {'steps':>6} {'tokens':>9} {'weights':>8} {'last loss':>10}",
    ]
    for r in results:
        lines.append(
            f"{r.name:<14} {r.tokens_per_second:>10.0f} {r.samples_per_second:>10.2f} {gib(r.peak_allocated):>15} "
            f"{gib(r.peak_reserved):>18} {r.seconds:>9.1f} {r.steps:>6} {r.tokens:>9} {r.weights:>8} "
            f"{r.final_loss if r.final_loss is not None else float('nan'):>10.3f}"
        )
    by_name = {r.name: r for r in results}
    if "seed" in by_name:
        seed = by_name["seed"]
        for r in results:
            if r is seed:
                continue
            memory = ""
            if r.peak_allocated is not None and seed.peak_allocated:
                memory = f", peak memory {r.peak_allocated / seed.peak_allocated:.2f}x"
            lines.append(f"{r.name} vs seed: {r.tokens_per_second / seed.tokens_per_second:.2f}x tokens/s{memory}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny Llama on the CPU: checks the code path in < 1 min")
    parser.add_argument(
        "--variant", action="append", default=[], help="name=recipe:key=value,... (repeatable); default: seed and fast"
    )
    parser.add_argument("--samples", type=int, default=None, help="synthetic rows (default 1000; smoke 32)")
    parser.add_argument("--mean-tokens", type=float, default=None, help="mean row length (default 380; smoke 48)")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="where the random model is saved (reused if there)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU: run it on the GPU server, or pass --smoke for the CPU code-path check")
    samples = args.samples or (32 if args.smoke else 1000)
    mean_tokens = args.mean_tokens or (48.0 if args.smoke else 380.0)
    variants = [parse_variant(text) for text in (args.variant or ["seed", "fast"])]
    device = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name()
    texts = synthetic_texts(samples, mean_tokens, seed=0)
    print(
        f"{len(texts)} synthetic rows, mean {sum(len(t.split()) + 1 for t in texts) / len(texts):.0f} tokens; {device}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as scratch_name:
        scratch = Path(scratch_name)
        shape, model_dir = (TINY, scratch / "tiny-llama") if args.smoke else (LLAMA2_7B, scratch / "llama-2-7b-random")
        model_dir = make_model_dir(args.model_dir or model_dir, shape, on_gpu=not args.smoke)
        results = []
        for name, base, overrides in variants:
            if args.smoke:
                overrides = {"max_length": 256, **overrides}
            config = recipe_config(base, overrides, model_dir, scratch / name, args.smoke)
            print(f"--- {name}: {base} recipe {overrides or ''}", flush=True)
            result = run_recipe(name, config, model_dir, texts, overrides)
            print(table([result], device).splitlines()[-1], flush=True)
            results.append(result)
    report = table(results, device)
    print("\n" + report)
    if args.json:
        rows = [
            {**r.__dict__, "tokens_per_second": r.tokens_per_second, "samples_per_second": r.samples_per_second}
            for r in results
        ]
        args.json.write_text(json.dumps({"device": device, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
