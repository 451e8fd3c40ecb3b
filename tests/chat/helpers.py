"""Helpers for the chat tests that start their own chat service."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from chatbot_protos.chat.v1 import chat_pb2

from scripts.stack import REPO, StackConfig

CHAT_PYTHON = REPO / ".venv" / "chat" / "bin" / "python"
TINY_MODELS = REPO / "tests" / "support" / "tiny_models.py"


def build_with_chat_venv(out: Path, *args: str) -> Path:
    """Runs tests/support/tiny_models.py in the chat venv (the test venv has no
    torch) and returns the folder it wrote."""
    command = [str(CHAT_PYTHON), str(TINY_MODELS), str(out), "--models-dir", str(StackConfig().models_dir), *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return out


def user(text: str, *images: bytes) -> chat_pb2.Message:
    message = chat_pb2.Message(role=chat_pb2.ROLE_USER, text=text)
    for data in images:
        message.images.add(data=data)
    return message


def chat(stub, *messages: chat_pb2.Message, timeout: float = 180, **options) -> tuple[str, chat_pb2.ChatFinal]:
    """Sends one request; returns the answer's text and its final summary."""
    adapter = options.pop("adapter", "")
    model = options.pop("model", "")
    request = chat_pb2.ChatRequest(messages=list(messages), options=chat_pb2.GenerationOptions(**options),
                                   adapter=adapter, model=model)
    replies = list(stub.Chat(request, timeout=timeout))
    assert replies[-1].HasField("final"), "the stream did not end with a final message"
    return "".join(r.delta for r in replies), replies[-1].final


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)
