"""``python -m asr_service``: run the gRPC speech-to-text server."""

from .openmp import limit_spinning

# Before the server's imports load CTranslate2 (and libgomp, which reads its
# environment once): see openmp.py.
limit_spinning()

from .server import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
