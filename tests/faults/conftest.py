"""Fault tests run their own services (on fixed ports, so that a replacement
can take a killed one's place): killing the shared stack's would break the
rest of the suite."""

from __future__ import annotations

import httpx
import pytest

from scripts.stack import free_ports
from tests.support.services import gateway_service

@pytest.fixture
def ports():
    chat, asr = free_ports(2)
    return {"chat": chat, "asr": asr}


@pytest.fixture
def gateway(tmp_path, ports):
    """A gateway of its own, pointed at `ports` (where the test starts its services)."""
    env = {"CHAT_ADDR": f"127.0.0.1:{ports['chat']}", "ASR_ADDR": f"127.0.0.1:{ports['asr']}"}
    with gateway_service(tmp_path, env) as (service, url), httpx.Client(base_url=url, timeout=120) as client:
        yield service, client
