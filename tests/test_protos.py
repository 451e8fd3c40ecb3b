"""The committed gRPC stubs must be exactly what protos/generate.py makes from the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_protos", PROTOS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto_files(tmp_path):
    fresh = load_generator().generate(tmp_path)
    assert fresh, "protoc generated nothing"
    stale = []
    for path in fresh:
        relative = path.relative_to(tmp_path)
        committed = PROTOS / relative
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(relative))
    assert not stale, f"stubs out of date, run `make protos`: {stale}"


def test_every_proto_file_has_generated_stubs():
    for proto in load_generator().proto_files():
        stem = proto.with_suffix("")
        for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"):
            assert Path(f"{stem}{suffix}").exists(), f"{proto.name}: missing {stem.name}{suffix}"


def test_contracts_are_versioned_packages():
    from chatbot_protos.asr.v1 import asr_pb2
    from chatbot_protos.chat.v1 import chat_pb2

    assert asr_pb2.DESCRIPTOR.package == "chatbot.asr.v1"
    assert chat_pb2.DESCRIPTOR.package == "chatbot.chat.v1"
    assert "StreamingTranscribe" in asr_pb2.DESCRIPTOR.services_by_name["Transcription"].methods_by_name
