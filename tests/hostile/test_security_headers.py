"""nginx sends the usual security headers and a CSP, HSTS on HTTPS only, speaks
TLS 1.2+ with strong suites only; the gateway never writes secrets to its log."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from urllib.parse import urlsplit

import httpx
import pytest

from scripts.stack import REPO, StackConfig, free_port
from tests.support.services import gateway_service, start_service

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@pytest.mark.parametrize("path", ["/", "/api/conversations", "/no-such-api-path.png"])
def test_every_answer_carries_the_security_headers(nginx_url, https_url, path):
    for base in (nginx_url, https_url):
        headers = httpx.get(base + path, verify=False, timeout=30).headers
        for name, value in COMMON.items():
            assert headers.get(name) == value, (base, path, name, headers)
        assert "microphone=(self)" in headers["permissions-policy"] and "camera=()" in headers["permissions-policy"]


def test_the_page_has_a_csp_that_allows_only_its_own_origin(nginx_url):
    csp = httpx.get(nginx_url + "/", timeout=30).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_hsts_is_sent_over_https_and_never_over_plain_http(nginx_url, https_url):
    hsts = httpx.get(https_url + "/", verify=False, timeout=30).headers.get("strict-transport-security", "")
    assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 180 * 86400, hsts
    assert "strict-transport-security" not in httpx.get(nginx_url + "/", timeout=30).headers


def _handshake(https_url: str, context: ssl.SSLContext) -> str:
    """The negotiated protocol version, or raises the handshake's SSLError."""
    host, port = urlsplit(https_url).hostname, urlsplit(https_url).port
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return tls.version()


def _client(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Security level 0 lets this client offer old versions and weak suites at all,
    # so a refusal below comes from the server, not from our own OpenSSL.
    context.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    context.minimum_version, context.maximum_version = minimum, maximum
    return context


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"])
def test_tls_before_1_2_is_refused_by_the_server(https_url, version):
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(https_url, _client(version, version))
    # The server's protocol_version alert (or no shared version at all), not a local refusal.
    assert refused.value.reason in {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"}, refused.value


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_tls_1_2_and_1_3_are_served(https_url, version):
    assert _handshake(https_url, _client(version, version)) == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                                               ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "AES256-SHA256"])
def test_weak_tls_1_2_suites_are_refused(https_url, suite):
    """CBC with SHA-1, or static RSA key exchange (no forward secrecy): what scanners flag."""
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(https_url, _client(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, suite))
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", refused.value


# --- secrets never logged ---------------------------------------------------------------------

DB_PASSWORD = "Db-pass-never-logged-4711"


def test_a_database_url_password_is_not_logged_when_the_database_is_unreachable(tmp_path):
    """The gateway logs the URL it cannot open (the place a password would leak) without its password."""
    url = f"postgresql://chatbot:{DB_PASSWORD}@127.0.0.1:{free_port()}/chatbot"
    gateway = start_service("gateway", tmp_path, {"GATEWAY_PORT": str(free_port()), "DATABASE_URL": url,
                                                  "LOG_LEVEL": "DEBUG"})
    try:
        assert gateway.process.wait(timeout=90) != 0  # no database: it must not start
    finally:
        gateway.stop()
    log = gateway.log_path.read_text(errors="replace")
    assert "cannot open the database postgresql://chatbot:***@127.0.0.1" in log, log[-2000:]
    assert DB_PASSWORD not in log


def test_api_keys_and_passwords_used_in_requests_are_not_logged(tmp_path):
    env = {"GATEWAY_AUTH": "on", "LOG_LEVEL": "DEBUG"}
    with gateway_service(tmp_path, env) as (gateway, url):
        admin_env = {**os.environ, **StackConfig(data_dir=tmp_path / "data", auth="on").service_env()}
        created = subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-m", "gateway.admin",
                                  "create-user", "alice"], env=admin_env, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        fields = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line)
        password, key = fields["password"].strip(), fields["api key"].strip()
        wrong_key = key[:-6] + "XXXXXX"
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/api/conversations", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert client.get("/api/conversations", headers={"Authorization": f"Bearer {wrong_key}"}).status_code \
                == 401
            assert client.post("/api/auth/login", json={"username": "alice", "password": password}).status_code == 200
            assert client.post("/api/auth/login", json={"username": "alice", "password": password + "!"}) \
                .status_code == 401
        time.sleep(0.5)  # access lines are written as the answers go out
        log = gateway.log_path.read_text(errors="replace")
    assert "/api/auth/login" in log  # the requests were logged at all
    for secret in (key, wrong_key, password):
        assert secret not in log
