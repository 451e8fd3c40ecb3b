"""LoRA adapters from ADAPTERS_DIR served on the embedded SmolLM2 (docs/adapters.md).

Two adapters with random LoRA weights (so they visibly change the answers) are
written in the trainer's layout next to folders that break the contract; a
chat service with two workers serves them. Greedy answers make "which adapter
answered" observable: each adapter has its own, different from the base's.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc

from tests.chat.helpers import build_with_chat_venv, chat, rpc_error, user, wait_for
from tests.support.services import grpc_service

BASE = "smollm2-135m-instruct"
QUESTION = "Name a fruit."


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    build_with_chat_venv(root / "alpha", "--lora-seed", "1")
    build_with_chat_venv(root / "beta", "--lora-seed", "2")
    # Folders the service must skip, each for its own reason.
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    shutil.copytree(root / "alpha", root / "foreign")
    manifest = json.loads((root / "alpha" / "manifest.json").read_text())
    (root / "foreign" / "manifest.json").write_text(
        json.dumps({**manifest, "name": "foreign", "base_model": "meta-llama/Llama-3.2-11B-Vision-Instruct"}))
    shutil.copytree(root / "alpha", root / "unfinished")
    (root / "unfinished" / "manifest.json").unlink()
    shutil.copytree(root / "alpha", root / "misnamed")
    shutil.copytree(root / "alpha", root / ".alpha.partial-x1y2")  # a trainer's work in progress
    return root


@pytest.fixture(scope="module")
def service(adapters_dir, tmp_path_factory):
    env = {"ADAPTERS_DIR": str(adapters_dir), "CHAT_ADAPTERS_POLL_S": "0.5", "CHAT_WORKERS": "2",
           "CHAT_MAX_QUEUE": "8"}
    with grpc_service("chat", tmp_path_factory.mktemp("adapters-chat"), env) as (process, address):
        with grpc.insecure_channel(address) as channel:
            yield process, chat_pb2_grpc.ChatServiceStub(channel)


@pytest.fixture(scope="module")
def stub(service):
    return service[1]


def answer(stub, adapter: str = "", **kwargs) -> str:
    return chat(stub, user(QUESTION), adapter=adapter, max_tokens=8, temperature=0, **kwargs)[0]


@pytest.fixture(scope="module")
def reference(stub) -> dict[str, str]:
    """Each adapter's greedy answer (and the base's, under "")."""
    return {name: answer(stub, name) for name in ("", "alpha", "beta")}


def listed(stub) -> dict[str, chat_pb2.ModelInfo]:
    return {m.name: m for m in stub.ListModels(chat_pb2.ListModelsRequest()).models}


def test_list_models_shows_the_valid_adapters_with_their_base_model(stub):
    models = listed(stub)
    assert set(models) == {BASE, "alpha", "beta"}
    assert models[BASE].base_model == ""
    for name in ("alpha", "beta"):
        assert models[name].base_model == BASE and models[name].backend == "transformers"
        assert models[name].context_length == models[BASE].context_length


def test_invalid_adapter_folders_are_skipped_with_a_logged_reason(service, adapters_dir):
    process, stub = service
    log = process.log_path.read_text(errors="replace")
    expected = {"broken": "manifest.json is not valid JSON",
                "foreign": "trained on 'meta-llama/Llama-3.2-11B-Vision-Instruct'",
                "unfinished": "no manifest.json",
                "misnamed": "manifest.json names 'alpha', not its folder 'misnamed'"}
    for folder, reason in expected.items():
        assert re.search(rf"adapter folder \S*{folder} skipped: .*{re.escape(reason)}", log), (folder, reason)
    assert ".alpha.partial" not in log, "a folder being written must be ignored silently"
    assert answer(stub), "the service stopped serving"


def test_adapters_change_the_greedy_answer(reference):
    assert len(set(reference.values())) == 3, reference


def test_adapters_switch_per_request_without_reloading(stub, reference):
    for name in ("alpha", "beta", "", "beta", "alpha", ""):
        assert answer(stub, name) == reference[name], name


def test_concurrent_requests_for_different_adapters_each_get_their_own(stub, reference):
    order = ["alpha", "beta", "", "alpha", "beta", ""]
    with ThreadPoolExecutor(len(order)) as pool:
        answers = list(pool.map(lambda name: answer(stub, name), order))
    assert answers == [reference[name] for name in order]


def test_an_adapter_named_as_the_model_is_served(stub, reference):
    """OpenAI-compatible clients pick a fine-tune by its model name."""
    assert answer(stub, model="beta") == reference["beta"]


def test_unknown_adapter_is_not_found_and_names_the_loaded_ones(stub):
    error = rpc_error(lambda: answer(stub, "gamma"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'gamma'" in error.details() and "alpha, beta" in error.details()


def test_adapters_added_and_removed_while_serving_are_picked_up(stub, adapters_dir, reference):
    # Written as the trainer does: a hidden partial folder renamed into place.
    partial = adapters_dir / ".gamma.partial-abc"
    shutil.copytree(adapters_dir / "alpha", partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    (partial / "manifest.json").write_text(json.dumps({**manifest, "name": "gamma"}))
    partial.rename(adapters_dir / "gamma")
    wait_for(lambda: "gamma" in listed(stub), 30, "the new adapter to be listed")
    assert answer(stub, "gamma") == reference["alpha"], "gamma carries alpha's weights"

    shutil.rmtree(adapters_dir / "gamma")
    wait_for(lambda: "gamma" not in listed(stub), 30, "the removed adapter to be unlisted")
    assert rpc_error(lambda: answer(stub, "gamma")).code() == grpc.StatusCode.NOT_FOUND
    assert answer(stub, "alpha") == reference["alpha"]
