"""Reading the gateway's /metrics in tests (Prometheus text format)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset], float]


def samples_of(gateway_url: str) -> Samples:
    response = httpx.get(f"{gateway_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(gateway_url: str) -> Samples:
    """The gateway's samples once no HTTP request is in progress: a response's
    last bytes can reach the client a moment before the gateway has counted it."""
    return scrape_when(gateway_url, lambda samples: value(samples, "gateway_http_requests_in_progress") == 0)


def scrape_when(gateway_url: str, ready: Callable[[Samples], bool], timeout: float = 5) -> Samples:
    """The first samples for which `ready` holds, or the last ones after `timeout`
    (the caller's assertions then say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = samples_of(gateway_url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
