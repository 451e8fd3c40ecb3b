"""``python -m vision_chat_service``: run the gRPC chat server."""

import sys

from chatbot_protos.openmp import CHAT_SPIN_COUNT, limit_spinning

# Before anything loads PyTorch (and libgomp, which reads its environment
# once): chatbot_protos/openmp.py says why.
limit_spinning(CHAT_SPIN_COUNT)

from .server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
