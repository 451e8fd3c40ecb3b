"""`make run`'s launcher: prints the address once ready, and Ctrl-C stops every
process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from scripts.stack import REPO, ensure_certificate, expires_soon, free_port
from tests.support.certificates import certificate_days, short_lived_pair


def children_of(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_serves_the_page_and_ctrl_c_stops_every_process(tmp_path):
    ports = {name: str(free_port()) for name in ("NGINX_HTTP_PORT", "NGINX_HTTPS_PORT", "GATEWAY_PORT",
                                                   "ASR_PORT", "CHAT_PORT")}
    env = {**os.environ, **ports, "RUN_DIR": str(tmp_path), "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    env.pop("GATEWAY_AUTH", None)  # the default: sign-in on, a first user made at the first start
    launcher = subprocess.Popen([sys.executable, str(REPO / "scripts" / "stack.py"), "run"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = _read_until(launcher, "Ctrl-C stops everything", timeout=600)
        url = f"http://127.0.0.1:{ports['NGINX_HTTP_PORT']}"
        assert f"open {url}" in output
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        started = children_of(launcher.pid)
        assert len(started) == 4, f"expected asr, chat, gateway and nginx, got {started}"
        credentials = tmp_path / "data" / "admin-credentials.txt"
        assert "created the user 'admin'" in output and str(credentials) in output
        assert credentials.stat().st_mode & 0o777 == 0o600
        password = credentials.read_text().split("password: ", 1)[1].strip()
        assert httpx.get(f"{url}/api/conversations", timeout=10).status_code == 401
        signed_in = httpx.post(f"{url}/api/auth/login", json={"username": "admin", "password": password}, timeout=10)
        assert signed_in.status_code == 200 and signed_in.json()["auth"] == "on"

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 0
        assert not [pid for pid in started if is_alive(pid)], "processes left running after Ctrl-C"
        assert (tmp_path / "tls" / "cert.pem").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline, lines = time.monotonic() + timeout, []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError("launcher exited early:\n" + "".join(lines))


def test_the_launchers_certificate_lives_365_days_and_is_renewed_near_expiry_unless_put_there_by_hand(tmp_path):
    tls = tmp_path / "tls"
    cert, key = tls / "cert.pem", tls / "key.pem"
    ensure_certificate(tls)
    assert certificate_days(cert) == 365 and not expires_soon(cert)
    assert key.stat().st_mode & 0o077 == 0

    short_lived_pair(cert, key)  # its own certificate, 10 days from expiry
    ensure_certificate(tls)
    assert certificate_days(cert) == 365

    (tls / "self-signed").unlink()  # now a pair put there by hand
    short_lived_pair(cert, key)
    before = cert.read_bytes()
    ensure_certificate(tls)
    assert cert.read_bytes() == before and expires_soon(cert)
