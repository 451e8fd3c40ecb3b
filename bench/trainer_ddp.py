"""The same recipe on one GPU and on several (`accelerate launch`: DDP, or FSDP + QLoRA), as a
user runs it: `python -m trainer --config …` end to end, adapter published,
on the same synthetic data and random Llama-2-7B-shaped model as
bench/trainer_throughput.py (whose builders this reuses).

    python bench/trainer_ddp.py --gpus 2                   # fast recipe, 1 then 2 processes
    python bench/trainer_ddp.py --gpus 2 --recipe seed
    python bench/trainer_ddp.py --gpus 2 --modes single,fsdp   # the 4-bit base sharded (trainer/accelerate/fsdp-qlora.yaml)

Each run is a fresh process (group), so nothing carries over between them. Per
run: the trainer's own metrics from the adapter's manifest (tokens/s over the
training loop: TRL counts the tokens of every process; train runtime; steps;
losses) and the whole command's wall time (loading, eval, samples, publish
included). DDP keeps the per-GPU batch, so N processes take N times the rows
per step and 1/N of the steps: tokens/s is the comparable number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import trainer_throughput as text_bench  # noqa: E402  (the random model and the synthetic rows)

RECIPES = {"seed": "seed-llama2-guanaco.yaml", "fast": "fast-llama2-guanaco.yaml"}
FSDP_CONFIG = ROOT / "trainer" / "accelerate" / "fsdp-qlora.yaml"
MODES = ("single", "ddp", "fsdp")


def trainer_command(mode: str, processes: int, config: Path, overrides: dict[str, str]) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    launcher = {
        "single": [sys.executable, "-m", "trainer"],
        "ddp": [*launch, "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "-m", "trainer"],
        "fsdp": [*launch, "--config_file", str(FSDP_CONFIG), "-m", "trainer"],
    }[mode]
    command = [*launcher, "--config", str(config)]
    for key, value in overrides.items():
        command += [f"--{key}", value]
    return command


def run(mode: str, processes: int, config: Path, model_dir: Path, data: Path, scratch: Path) -> dict:
    name = f"{mode}-{processes}"
    overrides = {
        "name": name, "base_model": str(model_dir), "dataset": str(data), "dataset_format": "text",
        "adapters_dir": str(scratch / "adapters"), "output_dir": str(scratch / f"run-{processes}"),
        "eval_size": "16", "sample_prompts": "", "ollama_from": "", "report_to": "none",
        "save_steps": "1000000", "disable_tqdm": "true",
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "trainer"),
                                                                     os.environ.get("PYTHONPATH")]))}
    if mode == "single":
        env["CUDA_VISIBLE_DEVICES"] = "0"  # the trainer would keep to one GPU anyway, with a warning
    started = time.perf_counter()
    done = subprocess.run(trainer_command(mode, processes, config, overrides), env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr[-6000:], flush=True)
        raise SystemExit(f"{name} failed with exit {done.returncode}")
    manifest = json.loads((scratch / "adapters" / name / "manifest.json").read_text())
    return {"mode": mode, "processes": processes, "wall_s": wall, **manifest["metrics"], "log": done.stderr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="processes of the DDP run (one per GPU)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--model-dir", type=Path, default=None, help="random model folder (built if missing)")
    parser.add_argument("--modes", default="single,ddp", help=f"comma-separated, in order, of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        parser.error(f"--modes takes {', '.join(MODES)}")

    import torch

    if torch.cuda.device_count() < args.gpus:
        parser.error(f"{args.gpus} processes need {args.gpus} GPUs; this machine has {torch.cuda.device_count()}")
    scratch = Path(tempfile.mkdtemp(prefix="trainer-ddp-"))
    model_dir = text_bench.make_model_dir(args.model_dir or scratch / "llama-2-7b-random", text_bench.LLAMA2_7B,
                                          on_gpu=True)
    torch.cuda.empty_cache()
    data = scratch / "rows.jsonl"
    texts = text_bench.synthetic_texts(args.samples, 380.0, seed=0)
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    os.sync()
    config = ROOT / "trainer" / "configs" / RECIPES[args.recipe]
    print(f"{args.recipe} recipe, {args.samples} synthetic rows, {torch.cuda.get_device_name()} "
          f"x {torch.cuda.device_count()}", flush=True)
    results = []
    for mode in modes:
        processes = 1 if mode == "single" else args.gpus
        result = run(mode, processes, config, model_dir, data, scratch)
        print(f"{mode}, {processes} process(es): {result['tokens_per_second']:.0f} tokens/s, "
              f"{result['runtime_seconds']:.1f} s training, {result['steps']} steps, wall {result['wall_s']:.0f} s",
              flush=True)
        results.append(result)
    print(f"\n{'mode':>6} {'processes':>9} {'tokens/s':>9} {'train s':>8} {'wall s':>7} {'steps':>6} {'train loss':>10} "
          f"{'eval before':>11} {'eval after':>10} {'peak GiB (GPU 0)':>16}")
    for r in results:
        print(f"{r['mode']:>6} {r['processes']:>9} {r['tokens_per_second']:>9.0f} {r['runtime_seconds']:>8.1f} {r['wall_s']:>7.0f} "
              f"{r['steps']:>6} {r['train_loss']:>10.3f} {r['eval_loss_before']:>11.3f} {r['eval_loss_after']:>10.3f} "
              f"{r.get('peak_gpu_memory_gib') or float('nan'):>16.2f}")
    single = next((r for r in results if r["mode"] == "single"), None)
    for many in (r for r in results if single and r["mode"] != "single"):
        print(f"{many['mode']} on {args.gpus} GPUs vs 1: {many['tokens_per_second'] / single['tokens_per_second']:.2f}x "
              f"tokens/s (ideal {args.gpus}x), training time "
              f"{single['runtime_seconds'] / many['runtime_seconds']:.2f}x shorter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
