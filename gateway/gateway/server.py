"""Entry point: `python -m gateway` serves the HTTP API on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app
from .config import load_settings
from .observability.logs import configure_logging
from .storage_errors import check_data_dir


# On SIGTERM, answers being streamed get this long to finish before they are
# cut; under compose's stop_grace_period (30 s) so that the exit is our own,
# as the model services' grace (chatbot_protos/serving.py).
SHUTDOWN_GRACE_S = 25
# How long an idle kept-alive connection stays open. nginx keeps its idle
# connections to the gateway for 50 s (keepalive_timeout in its upstream block):
# the gateway must hold them longer, or it may close one just as nginx reuses
# it, and nginx answers that request 502 (it does not retry a POST). uvicorn's
# default is 5 s, which let that race happen under load.
KEEP_ALIVE_S = 65


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chatbot HTTP gateway. Settings come from the environment "
                                                 "(see docs/configuration.md); flags override them.")
    parser.add_argument("--port", type=int, help="overrides GATEWAY_PORT")
    args = parser.parse_args(argv)
    settings = load_settings(**({"gateway_port": args.port} if args.port is not None else {}))
    configure_logging(settings.log_level, settings.gateway_log_format)
    check_data_dir(settings.gateway_data_dir)
    logging.getLogger("gateway").info("gateway listening on %s:%d (asr %s, chat %s)", settings.gateway_host,
                                      settings.gateway_port, settings.asr_addr, settings.chat_addr)
    # One worker: the gateway is I/O bound; scale out with replicas behind nginx.
    # uvloop and httptools by name, not "auto": a missing one fails loudly
    # instead of silently costing ~0.25 ms of CPU per request.
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port, loop="uvloop",
                http="httptools", log_level=settings.log_level.lower(), log_config=None, proxy_headers=True,
                forwarded_allow_ips="*", timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                timeout_keep_alive=KEEP_ALIVE_S)
    return 0
