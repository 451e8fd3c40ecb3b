"""What operators see: Prometheus metrics (metrics, http_metrics, grpc_metrics)
and log lines that carry the request id (logs)."""
