"""The trainer's vision path: the shipped llama32-vision.yaml run as a real
process on the CPU, with a tiny randomly initialised Mllama (Llama 3.2
Vision's structure and image processor, tests/support/tiny_models.py) in
real nf4 and easy-vqa's images; then the adapter served by the chat service.

Only what the CPU and the tiny model force is overridden (CPU_OVERRIDES); the
rest is the file's own: LoRA on the language model's linear layers, the
vision tower kept out of 4-bit, messages + images rows, held-out samples.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from tests.trainer.conftest import ROOT, TRAINER_PYTHON

VISION_CONFIG = ROOT / "trainer" / "configs" / "llama32-vision.yaml"
NAME = "tiny-mllama-vqa"
CPU_OVERRIDES = [
    "--dataset", "easy-vqa:train", "--eval_split", "easy-vqa:test",
    "--max_train_rows", "32", "--max_eval_rows", "4",
    "--max_steps", "4", "--per_device_train_batch_size", "4",
    "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
    "--compute_dtype", "float32", "--double_quant", "false",  # no fast half-precision matmuls on this CPU
    "--use_cpu", "true", "--bf16", "false", "--optim", "adamw_torch",
    "--gradient_checkpointing", "false", "--dataloader_num_workers", "0",
    "--report_to", "none", "--logging_steps", "1", "--save_steps", "100",
    "--sample_images", "2", "--sample_max_new_tokens", "4",
]
RUN_TIMEOUT_S = 900


def trainer(env: dict[str, str], adapters: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(TRAINER_PYTHON), "-m", "trainer", "--config", str(VISION_CONFIG), "--adapters_dir", str(adapters),
               "--disable_tqdm", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def vision_run(trainer_env, tiny_vision_model, tmp_path_factory):
    model = tiny_vision_model("mllama")
    adapters = tmp_path_factory.mktemp("vision-adapters")
    result = trainer(trainer_env, adapters, "--name", NAME, "--base_model", str(model), *CPU_OVERRIDES)
    assert result.returncode == 0, result.stderr[-4000:]
    return adapters, model, result.stderr


def manifest_of(adapters: Path) -> dict:
    return json.loads((adapters / NAME / "manifest.json").read_text(encoding="utf-8"))


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header (8-byte length, then JSON): no torch needed."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return [key for key in header if key != "__metadata__"]


def test_a_vision_qlora_run_lowers_the_eval_loss(vision_run):
    adapters, model, _ = vision_run
    manifest = manifest_of(adapters)
    assert manifest["task"] == "vision" and manifest["base_model"] == str(model.resolve())
    assert manifest["dataset"]["format"] == "vision"
    assert (manifest["dataset"]["train_rows"], manifest["dataset"]["eval_rows"]) == (32, 4)
    assert manifest["run"]["base_weights"] == "nf4"
    metrics = manifest["metrics"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"], metrics
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_second"] > 0, metrics


def test_only_the_language_model_is_quantised_and_adapted(vision_run):
    adapters, _, log = vision_run
    assert "not quantised: model.vision_model, model.multi_modal_projector" in log, log[-3000:]
    keys = safetensors_keys(adapters / NAME / "adapter_model.safetensors")
    assert keys and all(".language_model.layers." in key for key in keys), keys[:5]
    # Every linear kind of the language model got one, the cross-attention (image) layers included.
    for kind in ("self_attn.q_proj", "cross_attn.q_proj", "mlp.down_proj"):
        assert any(kind in key for key in keys), kind


def test_the_processor_travels_with_the_adapter(vision_run):
    adapters, _, _ = vision_run
    folder = adapters / NAME
    assert (folder / "processor_config.json").is_file()
    assert (folder / "tokenizer.json").is_file()


def test_held_out_images_are_answered_before_and_after_training(vision_run):
    adapters, _, _ = vision_run
    samples = manifest_of(adapters)["samples"]
    assert len(samples) == 2, samples
    for sample in samples:
        assert Path(sample["image"]).suffix == ".png" and Path(sample["image"]).is_file(), sample
        assert "/test/" in sample["image"], "samples come from the held-out split"
        assert sample["prompt"].endswith("?") and sample["reference"], sample
        assert isinstance(sample["before"], str) and isinstance(sample["after"], str)
    assert any(s["before"] != s["after"] for s in samples), samples


def test_the_chat_service_serves_the_vision_adapter_and_it_changes_the_answers(vision_run, tmp_path):
    import grpc
    from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc

    from tests.chat.helpers import chat, user
    from tests.support.services import grpc_service

    adapters, model, _ = vision_run
    picture = Path(manifest_of(adapters)["samples"][0]["image"]).read_bytes()
    env = {"CHAT_MODEL": str(model), "ADAPTERS_DIR": str(adapters), "CHAT_MAX_TOKENS": "6"}
    with grpc_service("chat", tmp_path, env) as (_, address), grpc.insecure_channel(address) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        listed = {entry.name: entry for entry in stub.ListModels(chat_pb2.ListModelsRequest()).models}
        assert NAME in listed and listed[NAME].base_model == str(model.resolve()), listed
        question = user("what color is the shape?", picture)
        base, _ = chat(stub, question, max_tokens=6, temperature=0)
        tuned, final = chat(stub, question, adapter=NAME, max_tokens=6, temperature=0)
    assert tuned.strip() and final.completion_tokens > 0
    assert base != tuned, (base, tuned)


# ---------------------------------------------------------------- bad vision data


def write_rows(folder: Path, images: list[str]) -> Path:
    rows = [{"messages": [{"role": "user", "content": "what shape?"}, {"role": "assistant", "content": "circle"}],
             "images": [image]} for image in images]
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad_file", "content", "expected"),
    [
        ("missing.png", None, "row 2: image {folder}/missing.png does not exist"),
        ("broken.png", b"<html>not a picture</html>", "row 2: image {folder}/broken.png does not load"),
    ],
    ids=["missing", "not-an-image"],
)
def test_an_image_that_does_not_load_fails_before_the_model_loads(bad_file, content, expected, trainer_env,
                                                                  tiny_vision_model, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    (data / "pictures").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(data / "pictures" / "red.png")
    if content is not None:
        (data / "pictures" / bad_file).write_bytes(content)
    # Relative paths start from the data file's folder: rows 0 and 1 load, row 2 does not.
    rows = write_rows(data, ["pictures/red.png", str(data / "pictures" / "red.png"), f"pictures/{bad_file}"])
    adapters = tmp_path / "adapters"
    result = trainer(trainer_env, adapters, "--name", "bad-images", "--base_model", str(tiny_vision_model("mllama")),
                     "--dataset", str(rows), "--eval_split", "", "--eval_size", "0", *CPU_OVERRIDES[4:])
    assert result.returncode == 1, result.stderr[-3000:]
    message = expected.format(folder=data / "pictures")
    assert f"trainer: error: dataset {rows}, {message}" in result.stderr, result.stderr[-3000:]
    assert "Loading weights" not in result.stderr, "the check must come before the model loads"
    assert not (adapters / "bad-images").exists()


def test_images_for_a_text_model_are_refused_in_plain_words(trainer_env, tmp_path):
    result = trainer(trainer_env, tmp_path / "adapters", "--name", "text-base", "--base_model",
                     "smollm2-135m-instruct", *CPU_OVERRIDES)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "has images but smollm2-135m-instruct is a text model" in result.stderr, result.stderr[-3000:]
    assert "Loading weights" not in result.stderr
