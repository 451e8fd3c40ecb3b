"""A stand-in for Ollama's HTTP API, for testing the chat service's ollama backend.

THIS IS A STAND-IN, NOT OLLAMA. Ollama cannot be installed on the test
machines, so this small server speaks the part of Ollama's documented wire
protocol (https://github.com/ollama/ollama/blob/main/docs/api.md) that the
backend uses, over a real socket:

- GET  /api/version → {"version": "..."}
- POST /api/show    → {"details": {"family"}, "capabilities": [...], "model_info": {...}}, 404 when unknown
- POST /api/pull    → NDJSON progress lines ending with {"status": "success"}
- POST /api/chat    → NDJSON chunks {"model", "created_at", "message": {"role", "content"}, "done": false},
                      then {"done": true, "done_reason", "prompt_eval_count", "eval_count", "eval_duration", ...};
                      HTTP errors carry {"error": "..."}; a failure mid-stream is an {"error": ...} line.

Faults a real server shows, for the robustness tests: the process dying in the
middle of an answer (the connection drops after two chunks, no final chunk of
the chunked encoding) and a model still loading (nothing at all is sent for
`loading_s` seconds: Ollama answers only once the model is in memory).

It is the only stand-in in the suite. Tests steer it through `mode` and read
what the service sent in `chat_requests`. Benchmarks (bench/gateway_overhead.py)
set `pieces` and `piece_interval_s` for a long answer at a fixed pace.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY_PIECES = ["Veo ", "un ", "cuadrado ", "rojo."]
# Reported generation time of the answer, in nanoseconds as Ollama reports it.
EVAL_DURATION_NS = 250_000_000


@dataclass
class StandinState:
    version: str = "0.24.0"
    models: dict[str, dict] = field(default_factory=lambda: {
        "llama3.2-vision": {"family": "mllama", "capabilities": ["completion", "vision"]}})
    # "ok" | "busy" (503) | "missing" (404) | "midstream_error" | "bad_request" (400)
    # | "vanish_midway" (connection dropped after two chunks) | "loading" (silent for loading_s)
    mode: str = "ok"
    loading_s: float = 0.0
    # The answer of mode "ok", and the pause between its chunks (the first one comes at once).
    pieces: list[str] = field(default_factory=lambda: list(REPLY_PIECES))
    piece_interval_s: float = 0.0
    # Set when the service hung up on a request that was still loading.
    abandoned: threading.Event = field(default_factory=threading.Event)
    chat_requests: list[dict] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    state: StandinState  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _ndjson(self, lines: list[dict], finish: bool = True, pace_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, line in enumerate(lines):
            if pace_s and index:
                time.sleep(pace_s)
            payload = (json.dumps(line) + "\n").encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()
        if finish:
            self.wfile.write(b"0\r\n\r\n")

    def _load_then_answer(self, body: dict) -> None:
        """Silent while "loading"; notes it if the caller hung up meanwhile (the socket turns readable at EOF)."""
        readable, _, _ = select.select([self.connection], [], [], self.state.loading_s)
        if readable and not self.connection.recv(1, socket.MSG_PEEK):
            self.state.abandoned.set()
            self.close_connection = True
            return
        self._ndjson(self._chat_lines(body, fail_midway=False))

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length", 0))
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._json(200, {"version": self.state.version})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/api/show":
            self._show(body)
        elif self.path == "/api/pull":
            self._pull(body)
        elif self.path == "/api/chat":
            self._chat(body)
        else:
            self._json(404, {"error": "404 page not found"})

    def _show(self, body: dict) -> None:
        model = self.state.models.get(body.get("model", ""))
        if model is None:
            self._json(404, {"error": f"model '{body.get('model')}' not found"})
            return
        self._json(200, {"details": {"family": model["family"], "format": "gguf"},
                         "capabilities": model["capabilities"],
                         "model_info": {f"{model['family']}.context_length": 131072}})

    def _pull(self, body: dict) -> None:
        name = body.get("model", "")
        self.state.pulled.append(name)
        self.state.models[name] = {"family": "llama", "capabilities": ["completion"]}
        self._ndjson([{"status": "pulling manifest"}, {"status": "downloading", "completed": 1, "total": 2},
                      {"status": "success"}])

    def _chat(self, body: dict) -> None:
        self.state.chat_requests.append(body)
        mode = self.state.mode
        if mode == "busy":
            self._json(503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
        elif mode == "missing":
            self._json(404, {"error": f"model \"{body.get('model')}\" not found, try pulling it first"})
        elif mode == "bad_request":
            self._json(400, {"error": "invalid image input"})
        elif mode == "vanish_midway":
            self._ndjson(self._chat_lines(body, fail_midway=False)[:2], finish=False)
            self.connection.shutdown(socket.SHUT_RDWR)  # as when the process dies: no end of the stream
            self.close_connection = True
        elif mode == "loading":
            self._load_then_answer(body)
        else:
            self._ndjson(self._chat_lines(body, fail_midway=mode == "midstream_error"),
                         pace_s=self.state.piece_interval_s if mode == "ok" else 0.0)

    def _chat_lines(self, body: dict, fail_midway: bool) -> list[dict]:
        model = body.get("model")
        lines = [{"model": model, "created_at": "2026-11-28T00:00:00Z",
                  "message": {"role": "assistant", "content": piece}, "done": False} for piece in self.state.pieces]
        if fail_midway:
            return lines[:2] + [{"error": "an error was encountered while running the model: CUDA out of memory"}]
        return lines + [{"model": model, "created_at": "2026-11-28T00:00:01Z",
                         "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                         "total_duration": 1_000_000, "prompt_eval_count": 17, "eval_count": len(self.state.pieces),
                         "eval_duration": EVAL_DURATION_NS}]


class OllamaStandin:
    """Runs the stand-in on a free loopback port in a background thread."""

    def __init__(self, state: StandinState | None = None) -> None:
        self.state = state or StandinState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "OllamaStandin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
