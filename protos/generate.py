"""Generates the Python gRPC stubs from the .proto files in this folder.

The .proto folders mirror the Python package (chatbot_protos/asr/v1/asr.proto
becomes chatbot_protos.asr.v1.asr_pb2), so the generated imports work as they
are, with no rewriting. Run `python protos/generate.py` after editing a .proto;
tests/test_protos.py fails when the committed stubs and the .proto files disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("chatbot_protos/**/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under out_dir."""
    from grpc_tools import protoc  # only needed by whoever regenerates
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    relative = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *relative,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    return sorted(out_dir.glob("chatbot_protos/**/*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: next to the .proto files)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
