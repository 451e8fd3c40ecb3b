"""``python -m asr_service``: run the gRPC speech-to-text server."""

from chatbot_protos.openmp import ASR_SPIN_COUNT, limit_spinning

# Before the engine loads CTranslate2 (and libgomp, which reads its
# environment once): chatbot_protos/openmp.py says why.
limit_spinning(ASR_SPIN_COUNT)

from .server import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
