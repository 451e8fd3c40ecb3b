"""While the model is loading: health NOT_SERVING, ListModels says loaded =
false, Transcribe answers UNAVAILABLE; then all turn once it has loaded.

Whisper base loads in under a second here, too fast to look at. So the
service is given a model folder (the packaged base model's own files) whose
``config.json`` is a named pipe: CTranslate2 opens it while loading and waits
there, as it would on a slow network disk, until the test writes the real
file's bytes into the pipe. Nothing in the service is told it is a test; it
goes through its normal start (bind, health NOT_SERVING, load in a thread).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc

from scripts.stack import StackConfig, free_port
from tests.support import audio_clips as clips
from tests.support.grpc_health import health_status, wait_until_serving
from tests.support.services import start_service
from tests.support.tiny_whisper import ASR_PYTHON

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name
WHISPER_LANGUAGES = 100  # as in test_model_info.py


def packaged_base_folder() -> Path:
    """The folder the service loads for ASR_MODEL=base (provisioned if not yet)."""
    code = ("import sys; from pathlib import Path; from asr_service.model_store import resolve_model; "
            "print(resolve_model('base', Path(sys.argv[1])).model)")
    done = subprocess.run([str(ASR_PYTHON), "-c", code, str(StackConfig().models_dir)],
                          check=True, capture_output=True, text=True, timeout=300)
    return Path(done.stdout.strip())


@pytest.fixture
def slow_model(tmp_path) -> tuple[Path, bytes]:
    """A model folder whose config.json is a pipe; yields it and the bytes it must carry."""
    base = packaged_base_folder()
    folder = tmp_path / "base-over-a-pipe"
    folder.mkdir()
    for name in ("model.bin", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(base / name)
    os.mkfifo(folder / "config.json")
    return folder, (base / "config.json").read_bytes()


def wait_until_answering(address: str, service, timeout: float = 60) -> str:
    """Health's first answer once the port is up (UNREACHABLE before)."""
    deadline = time.monotonic() + timeout
    while (status := health_status(address)).startswith("UNREACHABLE"):
        assert service.running() and time.monotonic() < deadline, service.log_tail()
        time.sleep(0.2)
    return status


def feed(pipe: Path, data: bytes) -> None:
    """Write ``data`` into the pipe the loader is reading; it must already be waiting."""
    try:
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when nobody reads it
    except OSError as error:
        assert error.errno != errno.ENXIO, "the loader is not reading config.json"
        raise
    try:
        os.set_blocking(fd, True)
        os.write(fd, data)
    finally:
        os.close(fd)


def test_health_list_models_and_transcribe_while_the_model_loads(tmp_path, slow_model):
    folder, config = slow_model
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = start_service("asr", tmp_path, {"ASR_PORT": str(port), "ASR_MODEL": str(folder),
                                              "ASR_DEVICE": "cpu", "ASR_BATCH_SIZE": "1"})
    try:
        with grpc.insecure_channel(address) as channel:
            stub = asr_pb2_grpc.TranscriptionStub(channel)
            assert wait_until_answering(address, service) == "NOT_SERVING"
            time.sleep(1.0)  # still loading a while later: it waits for the model, not a race
            for name in ("", SERVICE_NAME):
                assert health_status(address, name) == "NOT_SERVING", name

            info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
            assert info.loaded is False
            assert (info.name, info.engine, info.default_language) == (str(folder), "faster-whisper", "es")
            assert (info.device, info.compute_type, list(info.languages)) == ("", "", [])

            with pytest.raises(grpc.RpcError) as refused:
                stub.Transcribe(asr_pb2.TranscribeRequest(audio=clips.speech("Hola", "webm")), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in refused.value.details()
            assert ("error-type", "model_not_ready") in tuple(refused.value.trailing_metadata() or ())

            feed(folder / "config.json", config)  # the model's last file arrives
            wait_until_serving(address, 120, service.running)

            info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
            assert info.loaded is True
            assert (info.device, info.compute_type) == ("cpu", "int8")
            assert len(info.languages) == WHISPER_LANGUAGES
            reply = stub.Transcribe(asr_pb2.TranscribeRequest(
                audio=clips.speech("Hola, quiero saber el tiempo de mañana", "webm")), timeout=120)
            assert "tiempo" in reply.text.lower()
    except BaseException:
        print(service.log_tail())
        raise
    finally:
        service.stop()
