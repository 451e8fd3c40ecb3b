"""Runs the whole stack natively: ASR service, chat service, gateway and nginx.

`make run` calls `python scripts/stack.py run`; the tests import `Stack` and
start the same processes on free ports. Standard library only, so any Python
can run it. Each service runs from its own virtualenv (.venv/NAME), which the
Makefile creates.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NGINX_TEMPLATES = REPO / "frontend" / "nginx"

# glibc malloc for the chat service; the same is set in vision-chat-service/Dockerfile.
# 20 prompts of 20 MB in a row, each refused as too long (SmolLM2-135M on 2 CPUs,
# gRPC straight to the service, RSS above a warm ~930 MB): with the servicer no
# longer keeping refused requests in a reference cycle (servicer.py), glibc's
# defaults still keep +146 MB of freed memory; a fixed trim threshold returns it
# to the OS: +50 MB at most. (Before that fix: +648 MB kept, +256 MB with the
# threshold; MALLOC_ARENA_MAX=2 did little.) CPU time per generated token was the
# same within noise (96-106 ms either way). A variable already set wins.
CHAT_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": "131072"}


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now: each socket stays bound until all are
    chosen, so the OS cannot hand the same port out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class StackConfig:
    """Ports and folders; defaults are those of docs/configuration.md."""

    http_port: int = 8080
    https_port: int = 8443
    gateway_port: int = 8000
    asr_port: int = 50051
    chat_port: int = 50052
    max_upload_mb: int = 25
    run_dir: Path = REPO / ".run"
    models_dir: Path = REPO / ".cache" / "models"
    venvs: Path = REPO / ".venv"
    # The gateway's database and stored images: kept across runs (and `make clean`).
    data_dir: Path = REPO / ".data"
    # "on": sign in (the first start creates user 'admin', password in data_dir);
    # "off": single-user mode, allowed because the gateway listens on loopback.
    auth: str = "on"
    # Extra variables for every service (CHAT_BACKEND, OLLAMA_URL, ASR_MODEL…).
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> "StackConfig":
        env = os.environ
        return cls(http_port=int(env.get("NGINX_HTTP_PORT", 8080)), https_port=int(env.get("NGINX_HTTPS_PORT", 8443)),
                   gateway_port=int(env.get("GATEWAY_PORT", 8000)), asr_port=int(env.get("ASR_PORT", 50051)),
                   chat_port=int(env.get("CHAT_PORT", 50052)), max_upload_mb=int(env.get("MAX_UPLOAD_MB", 25)),
                   models_dir=Path(env.get("MODELS_DIR", REPO / ".cache" / "models")).resolve(),
                   run_dir=Path(env.get("RUN_DIR", REPO / ".run")).resolve(),
                   data_dir=Path(env.get("GATEWAY_DATA_DIR", REPO / ".data")).resolve(),
                   auth=env.get("GATEWAY_AUTH", "on"))

    @classmethod
    def on_free_ports(cls, run_dir: Path, **overrides) -> "StackConfig":
        names = ("http_port", "https_port", "gateway_port", "asr_port", "chat_port")
        ports = dict(zip(names, free_ports(len(names))))
        return cls(run_dir=run_dir, **{**ports, **overrides})

    @property
    def credentials_file(self) -> Path:
        """Where the first start writes the password of the user 'admin' (mode 0600)."""
        return self.data_dir / "admin-credentials.txt"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def service_env(self) -> dict[str, str]:
        """The variables every service reads (docs/configuration.md)."""
        return {
            "MODELS_DIR": str(self.models_dir), "MAX_UPLOAD_MB": str(self.max_upload_mb),
            "ASR_HOST": "127.0.0.1", "ASR_PORT": str(self.asr_port),
            "CHAT_HOST": "127.0.0.1", "CHAT_PORT": str(self.chat_port),
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(self.gateway_port),
            "ASR_ADDR": f"127.0.0.1:{self.asr_port}", "CHAT_ADDR": f"127.0.0.1:{self.chat_port}",
            "GATEWAY_DATA_DIR": str(self.data_dir), "GATEWAY_AUTH": self.auth,
            **self.extra_env,
        }


# --- TLS -------------------------------------------------------------------

def local_addresses() -> list[str]:
    """This machine's own addresses, so the certificate also names its LAN IP
    (the browser's microphone needs HTTPS when the page is opened from another machine)."""
    found = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(info[4][0])
    except OSError:
        pass
    return sorted(a for a in found if not ipaddress.ip_address(a.split("%")[0]).is_link_local)


# Mozilla's "intermediate" TLS profile allows certificates of at most 366 days
# (tests/hostile/test_tls_scan.py runs a TLS scanner against it); a certificate
# this launcher made is replaced at a start that finds it within 30 days of expiry.
CERT_DAYS = 365
RENEW_WITHIN_S = 30 * 24 * 3600
# Written beside a pair this launcher made: a pair put there by hand (a real
# certificate) has no mark and is never replaced.
SELF_SIGNED_MARK = "self-signed"


def ensure_certificate(tls_dir: Path) -> None:
    """Makes a self-signed certificate at first start, and again when it nears expiry;
    other starts reuse it (so browsers keep the exception made for it)."""
    cert, key, mark = tls_dir / "cert.pem", tls_dir / "key.pem", tls_dir / SELF_SIGNED_MARK
    if cert.exists() and key.exists() and not (mark.exists() and expires_soon(cert)):
        return
    tls_dir.mkdir(parents=True, exist_ok=True)
    names = ["DNS:localhost", f"DNS:{socket.gethostname()}"]
    names += [f"DNS:{n}" for n in os.environ.get("TLS_HOSTNAMES", "").split(",") if n.strip()]
    names += [f"IP:{a}" for a in local_addresses()]
    new_cert, new_key = tls_dir / "cert.pem.tmp", tls_dir / "key.pem.tmp"
    # A fixed argument list (no shell); nothing in it comes from a request.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(CERT_DAYS),
                    "-subj", "/CN=chatbot.local", "-addext", "subjectAltName=" + ",".join(names),
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                    "-addext", "extendedKeyUsage=serverAuth",
                    "-keyout", str(new_key), "-out", str(new_cert)], check=True, capture_output=True)
    new_key.chmod(0o600)
    # Renamed into place, so an interrupted start never leaves half a pair.
    new_key.replace(key)
    new_cert.replace(cert)
    mark.write_text("cert.pem and key.pem were made by scripts/stack.py; it renews them before they expire\n")


def expires_soon(cert: Path) -> bool:
    """`openssl x509 -checkend N` fails when the certificate expires within N seconds."""
    return subprocess.run(["openssl", "x509", "-checkend", str(RENEW_WITHIN_S), "-noout", "-in", str(cert)],
                          capture_output=True).returncode != 0


# --- nginx -----------------------------------------------------------------

def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise SystemExit("nginx is not installed: run `sudo apt-get install -y nginx` (make run does it as root)")
    return found


def nginx_temp_dir() -> Path:
    """A folder for nginx's upload buffers that its workers can reach.

    Started as root, nginx runs its workers as an unprivileged user, which must
    be able to traverse every folder above this one: the run folder may not
    allow that (pytest's temp folders are 0700), a fresh folder in /tmp does.
    """
    folder = Path(tempfile.mkdtemp(prefix="chatbot-nginx-"))
    folder.chmod(0o711)
    return folder


def render_nginx(config: StackConfig, temp_dir: Path) -> Path:
    """Fills the same templates the Docker image uses; nginx's own $variables
    are written without braces and left alone by safe_substitute."""
    nginx_dir = config.run_dir / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    values = {"NGINX_HTTP_PORT": config.http_port, "NGINX_HTTPS_PORT": config.https_port,
              "GATEWAY_ADDR": f"127.0.0.1:{config.gateway_port}", "MAX_UPLOAD_MB": config.max_upload_mb,
              "STATIC_ROOT": REPO / "frontend" / "public", "TLS_CERT_DIR": config.tls_dir,
              "NGINX_RUN_DIR": nginx_dir, "NGINX_TEMP_DIR": temp_dir}
    for template, output in (("default.conf.template", "default.conf"), ("nginx.conf.native", "nginx.conf")):
        text = string.Template((NGINX_TEMPLATES / template).read_text()).safe_substitute(values)
        (nginx_dir / output).write_text(text)
    return nginx_dir / "nginx.conf"


# --- processes -------------------------------------------------------------

@dataclass
class Service:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    env_defaults: dict[str, str] = field(default_factory=dict)  # this service's, under `env`

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.env_defaults, **env}
        log = self.log_path.open("ab")
        # Own session: Ctrl-C reaches only the launcher, which then stops the
        # services in order instead of all at once.
        self.process = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:  # above the services' own 25 s grace
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """`model_services=False` starts only the gateway and nginx, in front of model
    services already listening on config.asr_port and config.chat_port (tests
    use it for a second front with other settings)."""

    def __init__(self, config: StackConfig, model_services: bool = True) -> None:
        self.config = config
        self._nginx_temp: Path | None = None
        logs = config.run_dir / "logs"
        python = lambda venv: str(config.venvs / venv / "bin" / "python")  # noqa: E731
        self.services = [
            Service("asr", [python("asr"), "-m", "asr_service"], logs / "asr.log"),
            Service("chat", [python("chat"), "-m", "vision_chat_service"], logs / "chat.log",
                    env_defaults=CHAT_MALLOC_ENV),
            Service("gateway", [python("gateway"), "-m", "gateway"], logs / "gateway.log"),
        ]
        if not model_services:
            self.services = self.services[-1:]

    def start(self, timeout: float = 600) -> None:
        """Starts everything and returns once /readyz answers 200 through nginx."""
        ensure_certificate(self.config.tls_dir)
        self._nginx_temp = nginx_temp_dir()
        nginx_conf = render_nginx(self.config, self._nginx_temp)
        self.services.append(Service("nginx", [nginx_binary(), "-p", str(nginx_conf.parent), "-c", str(nginx_conf),
                                               "-g", "daemon off;"], self.config.run_dir / "logs" / "nginx.log"))
        env = {**os.environ, **self.config.service_env(), "PYTHONUNBUFFERED": "1"}
        if self.config.auth == "on":
            self.create_first_user(env)
        for service in self.services:
            service.start(env)
        self.wait_ready(timeout)

    def create_first_user(self, env: dict[str, str]) -> None:
        """With auth on and no users yet, the gateway's admin command creates 'admin'."""
        python = str(self.config.venvs / "gateway" / "bin" / "python")
        subprocess.run([python, "-m", "gateway.admin", "bootstrap", str(self.config.credentials_file)],
                       env=env, check=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.config.url + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the stack was not ready within {timeout:.0f} s; logs in {self.config.run_dir / 'logs'}")

    def check_alive(self) -> None:
        for service in self.services:
            if service.process is not None and not service.running():
                raise RuntimeError(f"{service.name} exited with code {service.process.returncode}; "
                                   f"last lines of {service.log_path}:\n{service.log_tail()}")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        if self._nginx_temp is not None:
            shutil.rmtree(self._nginx_temp, ignore_errors=True)


def sign_in_hint(config: StackConfig) -> str:
    if config.auth != "on":
        return "  single-user mode (GATEWAY_AUTH=off): no sign-in\n"
    if config.credentials_file.exists():
        return f"  sign in as admin with the password in {config.credentials_file}\n"
    return "  sign in with your user (python -m gateway.admin create-user NAME makes one)\n"


def run(config: StackConfig) -> int:
    """`make run`: start, print the address, wait for Ctrl-C, stop everything."""
    stack = Stack(config)
    stop_requested = False

    def request_stop(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    started = time.monotonic()
    print(f"starting the stack (logs in {config.run_dir / 'logs'}) …", flush=True)
    try:
        stack.start()
        print(f"ready in {time.monotonic() - started:.1f} s\n"
              f"  open {config.url}  (or {config.https_url} from another machine: the microphone needs HTTPS)\n"
              f"{sign_in_hint(config)}"
              "  Ctrl-C stops everything", flush=True)
        while not stop_requested:
            stack.check_alive()
            time.sleep(0.5)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping …", flush=True)
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run"], help="run: start everything in the foreground")
    parser.parse_args(argv)
    return run(StackConfig.from_environment())


if __name__ == "__main__":
    sys.exit(main())
