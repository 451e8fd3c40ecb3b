"""Session fixtures: the whole stack, started once as real processes on free ports.

The same launcher that `make run` uses (scripts/stack.py) starts the ASR
service, the chat service, the gateway and nginx; models are provisioned into
the repository's .cache/models and reused by later runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import pytest

from scripts.stack import REPO, Stack, StackConfig
from tests.support.postgres import postgres_server

# Short answers keep the suite quick on a 2-core CPU; length is not under test.
TEST_MAX_TOKENS = "24"
# A low duration limit lets a test reach it with a small file.
TEST_MAX_AUDIO_SECONDS = 120
# Limits of the secured front, low enough for tests to reach.
SECURED_RATE_PER_MINUTE = 20
SECURED_MAX_STREAMS = 2
SECURED_CORS_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    run_dir = tmp_path_factory.mktemp("stack")
    # Adapters from a developer's trainer runs (.cache/adapters) must not leak into tests.
    # Single-user mode (the gateway listens on loopback) with SQLite: the
    # secured front below covers sign-in, several users and PostgreSQL.
    config = StackConfig.on_free_ports(run_dir, data_dir=run_dir / "data", auth="off", extra_env={
        "CHAT_MAX_TOKENS": TEST_MAX_TOKENS, "ASR_MAX_AUDIO_SECONDS": str(TEST_MAX_AUDIO_SECONDS),
        "ADAPTERS_DIR": str(run_dir / "adapters"),
        # Every test shares the one local user: the default 60 model calls a minute
        # would make later tests' 429s depend on how fast earlier ones ran. The
        # limits themselves are tested on the secured front.
        "RATE_LIMIT_PER_MINUTE": "100000", "MAX_STREAMS_PER_USER": "64"})
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


@pytest.fixture(scope="session")
def postgres_url():
    with postgres_server() as url:
        yield url


@dataclass
class SecuredFront:
    """A second gateway + nginx in front of the stack's model services, with
    auth on, PostgreSQL, low per-user limits and one CORS origin."""

    stack: Stack
    admin_password: str

    @property
    def url(self) -> str:
        return self.stack.config.url

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m gateway.admin ARGS` on this front's database."""
        env = {**os.environ, **self.stack.config.service_env()}
        return subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-m", "gateway.admin", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    def new_user(self, username: str) -> tuple[str, str]:
        """Creates a user; returns (password, API key)."""
        done = self.admin("create-user", username)
        assert done.returncode == 0, done.stderr
        fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        return fields["password"].strip(), fields["api key"].strip()


@pytest.fixture(scope="session")
def secured(stack, postgres_url, tmp_path_factory) -> SecuredFront:
    run_dir = tmp_path_factory.mktemp("secured")
    config = StackConfig.on_free_ports(
        run_dir, asr_port=stack.config.asr_port, chat_port=stack.config.chat_port, data_dir=run_dir / "data",
        auth="on", extra_env={"DATABASE_URL": postgres_url, "RATE_LIMIT_PER_MINUTE": str(SECURED_RATE_PER_MINUTE),
                              "MAX_STREAMS_PER_USER": str(SECURED_MAX_STREAMS), "CORS_ORIGINS": SECURED_CORS_ORIGIN,
                              # many tests sign in from 127.0.0.1 (test_users.py tests this limit on its own)
                              "LOGIN_ATTEMPTS_PER_MINUTE": "1000"})
    front = Stack(config, model_services=False)
    try:
        front.start(timeout=120)
    except BaseException:
        front.stop()
        raise
    password = dict(line.split(": ", 1) for line in config.credentials_file.read_text().splitlines())["password"]
    yield SecuredFront(front, password)
    front.stop()


@pytest.fixture(scope="session")
def tiny_vision_model(tmp_path_factory):
    """Builds a tiny random vision-language checkpoint of a family once per session."""
    from tests.chat.helpers import build_with_chat_venv

    built = {}

    def build(family: str):
        if family not in built:
            built[family] = build_with_chat_venv(tmp_path_factory.mktemp(family) / "model", "--family", family)
        return built[family]

    return build


@pytest.fixture(scope="session")
def vision_front(stack, tiny_vision_model, tmp_path_factory):
    """nginx + gateway (single-user mode, SQLite) in front of a chat service that
    runs a tiny random Idefics3 vision model and the stack's ASR: the page and
    the API with image chat. Answers are meaningless; the image path is real."""
    from tests.support.services import grpc_service

    run_dir = tmp_path_factory.mktemp("vision-front")
    chat_env = {"CHAT_MODEL": str(tiny_vision_model("idefics3")), "ADAPTERS_DIR": str(run_dir / "no-adapters"),
                "CHAT_MAX_TOKENS": "8"}
    with grpc_service("chat", run_dir, chat_env) as (_, chat_address):
        config = StackConfig.on_free_ports(run_dir, asr_port=stack.config.asr_port,
                                           chat_port=int(chat_address.rsplit(":", 1)[1]),
                                           data_dir=run_dir / "data", auth="off")
        front = Stack(config, model_services=False)
        try:
            front.start(timeout=120)
            yield front
        finally:
            front.stop()
