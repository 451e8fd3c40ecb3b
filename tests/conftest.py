"""Session fixtures: the whole stack, started once as real processes on free ports.

The same launcher that `make run` uses (scripts/stack.py) starts the ASR
service, the chat service, the gateway and nginx; models are provisioned into
the repository's .cache/models and reused by later runs.
"""

from __future__ import annotations

import pytest

from scripts.stack import Stack, StackConfig

# Short answers keep the suite quick on a 2-core CPU; length is not under test.
TEST_MAX_TOKENS = "24"
# A low duration limit lets a test reach it with a small file.
TEST_MAX_AUDIO_SECONDS = 120


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    run_dir = tmp_path_factory.mktemp("stack")
    # Adapters from a developer's trainer runs (.cache/adapters) must not leak into tests.
    config = StackConfig.on_free_ports(run_dir, extra_env={
        "CHAT_MAX_TOKENS": TEST_MAX_TOKENS, "ASR_MAX_AUDIO_SECONDS": str(TEST_MAX_AUDIO_SECONDS),
        "ADAPTERS_DIR": str(run_dir / "adapters")})
    running = Stack(config)
    try:
        running.start(timeout=900)
    except BaseException:
        running.stop()
        raise
    yield running
    running.stop()


@pytest.fixture(scope="session")
def nginx_url(stack: Stack) -> str:
    return stack.config.url


@pytest.fixture(scope="session")
def https_url(stack: Stack) -> str:
    return stack.config.https_url


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.config.gateway_port}"


@pytest.fixture(scope="session")
def chat_addr(stack: Stack) -> str:
    return f"127.0.0.1:{stack.config.chat_port}"


@pytest.fixture(scope="session")
def asr_addr(stack: Stack) -> str:
    return f"127.0.0.1:{stack.config.asr_port}"


@pytest.fixture(scope="session")
def tiny_png() -> bytes:
    """A real 48x32 PNG with a detailed pattern (so it has some size)."""
    import io

    from PIL import Image

    image = Image.new("RGB", (48, 32))
    image.putdata([((x * 5) % 256, (y * 8) % 256, (x * y) % 256) for y in range(32) for x in range(48)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
