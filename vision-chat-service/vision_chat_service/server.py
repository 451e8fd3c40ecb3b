"""Entry point: `python -m vision_chat_service` serves ChatService on CHAT_HOST:CHAT_PORT."""

from __future__ import annotations

import argparse
import logging
import sys

from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc
from chatbot_protos.serving import ModelServer, host_port, run_service

from .backends import create_backend
from .config import Settings
from .servicer import ChatServicer

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
log = logging.getLogger("vision_chat_service")


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (→ 0) or until the backend fails to start (→ 1);
    the backend is closed either way."""
    backend = create_backend(settings)
    # Only the openai backend leaves the model empty: the server's first listed one.
    model = settings.model_name or "(the server's first model)"
    try:
        server = ModelServer("vision-chat-service", [SERVICE_NAME], settings.max_message_bytes)
        servicer = ChatServicer(backend, settings.chat_system_prompt)
        chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server.server)
        port = server.bind(settings.chat_host, settings.chat_port)
        # The launcher and the tests read this line to learn the port when it was 0.
        log.info("vision-chat-service listening on %s (backend %s, model %s)",
                 host_port(settings.chat_host, port), settings.chat_backend, model)
        return await server.run(backend.start, model=model)
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat gRPC service. Settings come from the environment "
                                                 "(see docs/configuration.md); flags override them.")
    parser.add_argument("--port", type=int, help="overrides CHAT_PORT (0 = any free port)")
    parser.add_argument("--backend", choices=["transformers", "ollama", "openai"], help="overrides CHAT_BACKEND")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"chat_port": args.port, "chat_backend": args.backend}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_service(serve(settings))
