"""CHAT_QUANTIZATION=4bit: the embedded SmolLM2 loaded as NF4 through
bitsandbytes (which quantizes on CPUs too, so the GPU server's 4-bit path runs
here), over real gRPC."""

from __future__ import annotations

import re

import grpc
import pytest
from chatbot_protos.chat.v1 import chat_pb2_grpc

from tests.chat.helpers import chat, user
from tests.support.services import grpc_service

FP32_MIB = 513  # SmolLM2-135M in float32: 135 M parameters x 4 bytes


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("nf4")
    env = {"CHAT_QUANTIZATION": "4bit", "ADAPTERS_DIR": str(root / "no-adapters")}
    with grpc_service("chat", root, env) as (process, address), grpc.insecure_channel(address) as channel:
        yield process, chat_pb2_grpc.ChatServiceStub(channel)


def test_the_model_is_loaded_in_4_bits_and_answers(service):
    process, stub = service
    loaded = re.search(r"loaded smollm2-135m-instruct \(llama, text only, nf4 weights, (\d+) MiB\)",
                       process.log_path.read_text(errors="replace"))
    assert loaded, "no load line naming nf4 weights"
    # Embeddings stay in float32; the 30 layers' linear weights shrink 8x.
    assert int(loaded.group(1)) < FP32_MIB / 2
    text, final = chat(stub, user("Name a fruit."), max_tokens=3, temperature=0)
    assert final.completion_tokens == 3 and text.strip()
