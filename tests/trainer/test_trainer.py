"""The QLoRA trainer as a black box: `.venv/trainer/bin/python -m trainer …` run
as a real process on the CPU config (the embedded SmolLM2-135M in real 4-bit
nf4 via bitsandbytes, Spanish chatterbot-corpus pairs), output in temporary
folders. What is checked is what a user and the chat service see: the exit
status, the messages, and the adapter folder of docs/adapters.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.support.volumes import small_volume

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"
CPU_CONFIG = ROOT / "trainer" / "configs" / "cpu-smollm2-chatterbot.yaml"
EMBEDDED = "smollm2-135m-instruct"
SEED_PROMPT = "¿Cómo puedo encontrar trabajo de ingeniero?"
REQUIRED_KEYS = {"format_version": int, "name": str, "kind": str, "task": str, "base_model": str, "created": str}
RUN_TIMEOUT_S = 900


def trainer_command(adapters_dir: Path, *args: str) -> list[str]:
    return [
        str(TRAINER_PYTHON),
        "-m",
        "trainer",
        "--config",
        str(CPU_CONFIG),
        "--adapters_dir",
        str(adapters_dir),
        "--disable_tqdm",
        *args,
    ]


def run_trainer(env: dict[str, str], adapters_dir: Path, *args: str, timeout: int = RUN_TIMEOUT_S):
    return subprocess.run(
        trainer_command(adapters_dir, *args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def visible_entries(adapters_dir: Path) -> list[str]:
    """What the chat service would consider: folders not starting with '.'."""
    if not adapters_dir.exists():
        return []
    return sorted(path.name for path in adapters_dir.iterdir() if not path.name.startswith("."))


def partial_folders(adapters_dir: Path) -> list[str]:
    return sorted(path.name for path in adapters_dir.glob(".*.partial-*")) if adapters_dir.exists() else []


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- a complete run


@pytest.fixture(scope="module")
def fresh_run(trainer_env, tmp_path_factory):
    """One complete QLoRA run; knobs of the config file overridden on the command line."""
    adapters = tmp_path_factory.mktemp("adapters")
    result = run_trainer(
        trainer_env,
        adapters,
        "--name",
        "fresh-es",
        "--max_steps",
        "4",
        "--lora_r",
        "8",
        "--ollama_from",
        "smollm2:135m",
        "--report_to",
        "tensorboard",  # the CPU config turns it off; the reports are tested here
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return adapters, adapters / "fresh-es", result


def test_a_few_qlora_steps_on_the_4bit_base_lower_the_loss(fresh_run):
    _, folder, _ = fresh_run
    manifest = read_manifest(folder)
    metrics = manifest["metrics"]
    assert manifest["run"]["base_weights"] == "nf4", manifest["run"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"], metrics
    assert metrics["train_loss_last"] < metrics["train_loss_first"], metrics
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_second"] > 0, metrics


def test_the_adapter_folder_is_complete_with_a_valid_manifest(fresh_run):
    adapters, folder, _ = fresh_run
    assert visible_entries(adapters) == ["fresh-es"]
    assert partial_folders(adapters) == []
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), f"{name} missing from {sorted(p.name for p in folder.iterdir())}"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA"
    modelfile = [line for line in (folder / "Modelfile").read_text().splitlines() if not line.startswith("#")]
    assert modelfile == ["FROM smollm2:135m", "ADAPTER ."], modelfile

    manifest = read_manifest(folder)
    for key, kind in REQUIRED_KEYS.items():
        assert isinstance(manifest.get(key), kind), f"{key}: {manifest.get(key)!r}"
    assert manifest["format_version"] == 1
    assert (manifest["name"], manifest["kind"], manifest["task"]) == ("fresh-es", "lora", "text")
    assert manifest["base_model"] == EMBEDDED  # what the chat service reports as loaded
    assert datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).tzinfo is not None
    dataset = manifest["dataset"]
    assert dataset["name"] == "chatterbot:spanish" and re.fullmatch(r"[0-9a-f]{64}", dataset["sha256"])
    assert dataset["eval_rows"] == 8 and dataset["train_rows"] > 100
    for package in ("torch", "transformers", "peft", "trl", "bitsandbytes"):
        assert manifest["versions"][package], f"no version for {package}"
    assert manifest["hyperparameters"]["quantization"] == "nf4"
    samples = {sample["prompt"]: sample for sample in manifest["samples"]}
    assert SEED_PROMPT in samples, samples
    assert isinstance(samples[SEED_PROMPT]["before"], str) and samples[SEED_PROMPT]["after"].strip()
    # Checkpoints go once the adapter is out; the run's log stays.
    run_dir = Path(manifest["run"]["run_dir"])
    assert not list(run_dir.glob("checkpoint-*"))
    assert [entry for entry in json.loads((run_dir / "log_history.json").read_text()) if "loss" in entry]


def test_the_run_folder_has_tensorboard_events_and_a_loss_curve(fresh_run, trainer_env):
    _, folder, _ = fresh_run
    run_dir = Path(read_manifest(folder)["run"]["run_dir"])
    losses = [entry["loss"] for entry in json.loads((run_dir / "log_history.json").read_text()) if "loss" in entry]
    # Read with TensorBoard's own reader, in the trainer's venv (where tensorboard is installed).
    script = ("import json, sys; from tensorboard.backend.event_processing.event_accumulator import "
              "EventAccumulator as E; runs = [E(p).Reload() for p in sys.argv[1:]]; "
              "print(json.dumps([s.value for r in runs if 'train/loss' in r.Tags()['scalars'] "
              "for s in r.Scalars('train/loss')]))")
    events = sorted({str(p.parent) for p in run_dir.rglob("events.out.tfevents.*")})
    assert events, f"no TensorBoard events under {run_dir}"
    read = subprocess.run([str(TRAINER_PYTHON), "-c", script, *events], capture_output=True, text=True,
                          env=trainer_env, timeout=120)
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout) == pytest.approx(losses, rel=1e-5)  # the same losses as the log
    png = run_dir / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert (width, height) == (600, 350)  # figsize 6 x 3.5 at 100 dpi


def test_command_line_values_override_the_config_file(fresh_run):
    _, folder, _ = fresh_run
    manifest = read_manifest(folder)
    config = yaml.safe_load(CPU_CONFIG.read_text())
    assert config["max_steps"] != 4 and config["lora_r"] != 8, "pick override values the config does not have"
    assert manifest["hyperparameters"]["max_steps"] == 4 and manifest["run"]["global_step"] == 4
    assert manifest["hyperparameters"]["lora_r"] == 8
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8
    assert manifest["hyperparameters"]["learning_rate"] == float(config["learning_rate"])  # not overridden: kept


def test_an_existing_adapter_is_not_replaced_without_overwrite(fresh_run, trainer_env):
    adapters, folder, _ = fresh_run
    before = (folder / "manifest.json").read_bytes()
    result = run_trainer(trainer_env, adapters, "--name", "fresh-es", timeout=120)
    assert result.returncode != 0
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (folder / "manifest.json").read_bytes() == before


# ---------------------------------------------------------------- refused before any work


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_an_unknown_key_is_rejected_with_the_nearest_known_one(where, trainer_env, tmp_path):
    adapters = tmp_path / "adapters"
    if where == "command line":
        result = run_trainer(trainer_env, adapters, "--lora_rank", "8", timeout=120)
    else:
        config = tmp_path / "typo.yaml"
        config.write_text(CPU_CONFIG.read_text() + "\nlearning_rat: 1.0e-4\n")
        result = subprocess.run(
            [str(TRAINER_PYTHON), "-m", "trainer", "--config", str(config), "--adapters_dir", str(adapters)],
            cwd=ROOT,
            env=trainer_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    typo, known = ("lora_rank", "lora_r") if where == "command line" else ("learning_rat", "learning_rate")
    assert result.returncode == 2, result.stderr
    assert f"unknown key '{typo}'" in result.stderr and f"did you mean '{known}'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not adapters.exists(), "nothing may be written for a refused configuration"


@pytest.mark.parametrize(
    "rows, args, expected",
    [
        ([{"question": "Hola", "answer": "Hola"}] * 20, [], ["'question'", "text column", "'messages'"]),
        (
            [{"body": "Hola"}] * 20,
            ["--dataset_format", "text", "--text_column", "content"],
            ["no column 'content'", "'body'"],
        ),
    ],
    ids=["no-known-format", "named-column-missing"],
)
def test_a_missing_column_fails_clearly_and_leaves_no_adapter(rows, args, expected, trainer_env, tmp_path):
    adapters = tmp_path / "adapters"
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    result = run_trainer(trainer_env, adapters, "--name", "bad-columns", "--dataset", str(data), *args, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert visible_entries(adapters) == [] and partial_folders(adapters) == []


@pytest.mark.parametrize("file_name, content", [("empty.jsonl", ""), ("header-only.csv", "text\n")])
def test_an_empty_dataset_fails_clearly_and_leaves_no_adapter(file_name, content, trainer_env, tmp_path):
    adapters = tmp_path / "adapters"
    data = tmp_path / file_name
    data.write_text(content)
    result = run_trainer(trainer_env, adapters, "--name", "empty-data", "--dataset", str(data), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "empty" in result.stderr and str(data) in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert visible_entries(adapters) == [] and partial_folders(adapters) == []


def test_a_read_only_adapters_folder_fails_at_the_start_not_after_training(trainer_env, tmp_path):
    with small_volume(tmp_path / "adapters", "1m", "ro") as adapters:
        result = run_trainer(trainer_env, adapters, "--name", "nowhere", timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"the adapters folder {adapters} cannot be written (Read-only file system)" in result.stderr
    assert "nothing was trained" in result.stderr and "Traceback" not in result.stderr
    assert "loaded" not in result.stderr, "the check must come before the model is loaded"


# ---------------------------------------------------------------- interrupted, then resumed


def wait_for_complete_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended (status {process.returncode}) before its first checkpoint"
        for checkpoint in sorted(run_dir.glob("checkpoint-*")):
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue
            return checkpoint
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint in {run_dir} after {timeout} s")


def test_an_interrupted_run_leaves_no_adapter_and_resume_completes_it(trainer_env, tmp_path):
    adapters = tmp_path / "adapters"
    # No eval set and no samples here (the complete run above covers them): this is about the checkpoints.
    name = "resumed-es"
    args = ["--name", name, "--max_steps", "4", "--save_steps", "2", "--eval_size", "0", "--sample_max_new_tokens", "0"]
    run_dir = adapters / ".runs" / name
    log = (tmp_path / "interrupted.log").open("w")
    process = subprocess.Popen(
        trainer_command(adapters, *args),
        cwd=ROOT,
        env=trainer_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        checkpoint = wait_for_complete_checkpoint(process, run_dir, timeout=RUN_TIMEOUT_S)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up: the worst case
        process.wait(timeout=60)
        log.close()
    assert checkpoint.name == "checkpoint-2"
    assert visible_entries(adapters) == [], "an interrupted run must leave no adapter folder in place"

    again = run_trainer(trainer_env, adapters, *args, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr, again.stderr[-3000:]

    merged = tmp_path / "merged"
    resumed = run_trainer(trainer_env, adapters, *args, "--resume", "--merged_dir", str(merged))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert visible_entries(adapters) == [name] and partial_folders(adapters) == []
    manifest = read_manifest(adapters / name)
    assert manifest["run"]["resumed_from"] == "checkpoint-2"
    assert manifest["run"]["global_step"] == 4
    assert manifest["metrics"]["steps"] == 4 and manifest["metrics"]["eval_loss_after"] is None
    assert manifest["dataset"]["eval_rows"] == 0 and manifest["samples"] == []
    history = json.loads((run_dir / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4], "steps 1-2 come from the checkpoint"
    # The optional export: base + adapter merged into one plain bf16 model.
    merged_config = json.loads((merged / "config.json").read_text())
    assert merged_config["dtype"] == "bfloat16" and "quantization_config" not in merged_config, merged_config
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert not (merged / "adapter_config.json").exists()


# ---------------------------------------------------------------- served by the chat service


def test_the_chat_service_serves_the_trained_adapter_and_it_changes_the_answers(fresh_run, tmp_path):
    import grpc
    from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc

    from tests.chat.helpers import chat, user
    from tests.support.services import grpc_service

    adapters, _, _ = fresh_run
    # Chatterbot's answers are short and end the turn: after a few steps the
    # adapter's greedy answers to greetings and short questions differ from the base's.
    questions = ["Hola", "¿Qué es la IA?"]
    with grpc_service("chat", tmp_path, {"ADAPTERS_DIR": str(adapters)}) as (_, address):
        with grpc.insecure_channel(address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            models = {m.name: m for m in stub.ListModels(chat_pb2.ListModelsRequest()).models}
            assert "fresh-es" in models and models["fresh-es"].base_model == EMBEDDED, models
            answers = {
                question: (
                    chat(stub, user(question), max_tokens=6, temperature=0)[0],
                    chat(stub, user(question), adapter="fresh-es", max_tokens=6, temperature=0)[0],
                )
                for question in questions
            }
    assert all(tuned.strip() for _, tuned in answers.values()), answers
    assert any(base != tuned for base, tuned in answers.values()), answers
