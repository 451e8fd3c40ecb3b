"""The gateway's Prometheus metrics, in one registry per app (so that tests may
build several apps in one process).

What is measured where:
- HTTP requests, latency, requests in flight and error types: the HttpMetrics
  middleware (http_metrics.py), labelled by route template, never by raw path;
- chat time to first token, tokens/s and token counts, transcription latency
  and audio seconds, failed gRPC calls: gRPC client interceptors
  (grpc_metrics.py), so every route that talks to the services is covered,
  /api and /v1 alike;
- live dictation (WebSocket /api/transcribe/stream): the route itself
  (routes/transcribe_stream.py), since a socket is neither an HTTP response
  nor a single gRPC reply: streams by outcome, audio received, interim and
  final results, and the wait for the last final result after the user stops.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
_TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_TRANSCRIBE_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_DICTATION_FINISH_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from request to the end of the response (whole stream for SSE), by route and status",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_progress = Gauge("gateway_http_requests_in_progress", "Requests being answered now (open streams too)",
                                 registry=r)
        self.errors = Counter("gateway_errors", "HTTP error responses by error type (the body's error_type, "
                                                "or code on /v1)", ["type", "status"], registry=r)
        self.backend_errors = Counter("gateway_backend_errors", "Failed gRPC calls to the model services, by method "
                                                                "and status code (mid-stream failures too)",
                                      ["method", "code"], registry=r)
        self.chat_ttft = Histogram("gateway_chat_time_to_first_token_seconds",
                                   "From the gRPC Chat call to its first generated text", ["model"],
                                   buckets=_TTFT_BUCKETS, registry=r)
        self.chat_tokens_per_s = Histogram("gateway_chat_tokens_per_second",
                                           "Generation speed of completed chat streams after the first token",
                                           ["model"], buckets=_TOKENS_PER_S_BUCKETS, registry=r)
        self.chat_tokens = Counter("gateway_chat_tokens", "Tokens of completed chat calls", ["model", "kind"],
                                   registry=r)
        self.transcribe_seconds = Histogram("gateway_transcription_duration_seconds",
                                            "Latency of successful transcriptions (gRPC Transcribe)",
                                            buckets=_TRANSCRIBE_BUCKETS, registry=r)
        self.audio_seconds = Counter("gateway_transcription_audio_seconds", "Seconds of audio transcribed",
                                     registry=r)
        self.transcriptions = Counter("gateway_transcriptions", "Successful transcriptions", registry=r)
        # The services' queues as the gateway sees them: its calls running or waiting there.
        self.backend_in_flight = Gauge("gateway_backend_calls_in_flight",
                                       "gRPC calls to the model services not finished yet (running or queued "
                                       "there), by method", ["method"], registry=r)
        self.open_streams = Gauge("gateway_open_streams", "Chat streams and dictation sockets open now "
                                                          "(what the per-user stream limit counts)", registry=r)
        self.dictation_streams = Counter("gateway_dictation_streams", "Live dictation sockets ended, by outcome: "
                                         "completed, client_left, or the error type", ["outcome"], registry=r)
        self.dictation_audio_bytes = Counter("gateway_dictation_audio_bytes", "Audio bytes received from dictating "
                                                                              "browsers", registry=r)
        self.dictation_results = Counter("gateway_dictation_results", "Transcription events sent to dictating "
                                                                      "browsers, by kind (interim, final)",
                                         ["kind"], registry=r)
        self.dictation_finish_seconds = Histogram(
            "gateway_dictation_finish_seconds", "From the browser's end frame to the last final result sent "
                                                "(what the user waits for after they stop speaking)",
            buckets=_DICTATION_FINISH_BUCKETS, registry=r)
