"""`GET /metrics`: Prometheus text format, for operators to scrape the gateway
directly. nginx does not proxy it (it is not for the public), and requests to
it are not counted in the metrics themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..observability.metrics import GatewayMetrics

router = APIRouter(tags=["operations"])


async def get_metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(registry: MetricsDep) -> Response:
    """Requests, latencies, time to first token, tokens/s, transcription latency and audio seconds, errors."""
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
