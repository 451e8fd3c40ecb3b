"""``python -m asr_service``: run the gRPC speech-to-text server."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
