"""Static checks of the container deployment: docker-compose.yml, the Dockerfiles
and the helpers they copy. No Docker engine is needed (none runs in CI): the
compose file is read as YAML, ${VAR:-default} is resolved to the defaults it
states, and each setting is compared with what the services' code, the nginx
template and the Dockerfiles say. The two container helpers (gRPC health probe,
self-signed certificate script) are run for real.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from tests.support.certificates import certificate_days, short_lived_pair

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
NGINX_TEMPLATE = ROOT / "frontend" / "nginx" / "default.conf.template"
ENTRYPOINT_SCRIPTS = ROOT / "frontend" / "docker-entrypoint.d"
CERT_SCRIPT = ENTRYPOINT_SCRIPTS / "10-self-signed-cert.sh"
GRPC_HEALTHCHECK = ROOT / "docker" / "grpc_healthcheck.py"

EXPECTED_SERVICES = {"ollama", "ollama-pull", "asr", "vision-chat", "gateway", "nginx", "trainer"}
LONG_RUNNING = ["ollama", "asr", "vision-chat", "gateway", "nginx"]
ONE_SHOT = ["ollama-pull", "trainer"]
GPU_SERVICES = ["asr", "ollama", "trainer"]

# Our Python services: compose service -> (project folder, package, env prefix
# of its settings class).
PY_SERVICES = {
    "asr": ("asr-service", "asr_service", "ASR_"),
    "vision-chat": ("vision-chat-service", "vision_chat_service", "CHAT_"),
    "gateway": ("gateway", "gateway", "GATEWAY_"),
    "trainer": ("trainer", "trainer", "TRAINER_"),
}
BUILT_SERVICES = {**{name: folder for name, (folder, _, _) in PY_SERVICES.items()}, "nginx": "frontend"}
# Services whose code lands with a later issue: their compose entry and
# Dockerfile are checked now, their package and variables once it exists.
# Remove the entry when the package arrives (the trainer arrived with issue 7).
PACKAGE_LANDS_LATER: set[str] = set()
PY_SERVICES_WITH_CODE = sorted(set(PY_SERVICES) - PACKAGE_LANDS_LATER)
BUILT_SERVICES_WITH_CODE = sorted(set(BUILT_SERVICES) - PACKAGE_LANDS_LATER)

# Variables set in compose that a library reads, not our code.
LIBRARY_ENV = {"HF_TOKEN": "huggingface_hub: token for gated models on the hub"}

# Server variables that Ollama documents (`ollama serve --help`).
OLLAMA_ENV = {
    "OLLAMA_HOST", "OLLAMA_KEEP_ALIVE", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_MAX_QUEUE", "OLLAMA_MODELS", "OLLAMA_DEBUG", "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KV_CACHE_TYPE", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_LOAD_TIMEOUT",
    "OLLAMA_SCHED_SPREAD", "OLLAMA_GPU_OVERHEAD", "OLLAMA_ORIGINS", "OLLAMA_NOPRUNE",
}

# The port variables of each service, as docs/configuration.md names them.
PORT_VARS = {
    "asr": ["ASR_PORT"],
    "vision-chat": ["CHAT_PORT"],
    "gateway": ["GATEWAY_PORT"],
    "nginx": ["NGINX_HTTP_PORT", "NGINX_HTTPS_PORT"],
    "trainer": [],
}

# (volume, target, read_only) that each service must mount.
EXPECTED_MOUNTS = {
    "asr": {("models", "/models", False)},
    "vision-chat": {("models", "/models", False), ("adapters", "/adapters", True)},
    "ollama": {("ollama", "/root/.ollama", False)},
    "trainer": {("adapters", "/adapters", False), ("data", "/data", False)},
    "nginx": {("tls", "/etc/nginx/tls", False)},
}

EXPECTED_DEPENDS_ON = {
    "ollama": {},
    "ollama-pull": {"ollama": "service_healthy"},
    "vision-chat": {"ollama": "service_healthy", "ollama-pull": "service_completed_successfully"},
    "asr": {},
    "gateway": {"asr": "service_healthy", "vision-chat": "service_healthy"},
    "nginx": {"gateway": "service_healthy"},
    "trainer": {},
}


# ---------------------------------------------------------------- helpers

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def resolve(value: object) -> str:
    """Compose interpolation against an empty environment: the defaults the file states."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return ""
        if match.group("op") in (":-", "-"):
            return match.group("arg")
        return ""

    return _INTERPOLATION.sub(substitute, str(value))


def load_compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict] = COMPOSE.get("services") or {}


def service(name: str) -> dict:
    assert name in SERVICES, f"docker-compose.yml has no service {name!r}"
    return SERVICES[name]


def raw_env(name: str) -> dict[str, str]:
    """The service's environment as written (before interpolation)."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def env(name: str) -> dict[str, str]:
    return {key: resolve(value) for key, value in raw_env(name).items()}


def duration_s(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text))
    assert parts, f"not a compose duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def dockerfile_path(name: str) -> Path:
    build = service(name)["build"]
    context = build.get("context", ".") if isinstance(build, dict) else build
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    return (ROOT / context / dockerfile).resolve()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def source_text(folder: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.rglob("*.py")))


def declares_field(field: str, text: str) -> bool:
    """A settings field `field: type` (class attribute), any indentation."""
    return re.search(rf"^\s+{re.escape(field)}\s*:", text, re.MULTILINE | re.IGNORECASE) is not None


def read_by_code(var: str, prefix: str, text: str) -> bool:
    """The variable's name appears in the code, or a settings field does that reads it:
    `models_dir` for MODELS_DIR, or `port` under env_prefix "ASR_" for ASR_PORT."""
    if re.search(rf"\b{re.escape(var)}\b", text, re.IGNORECASE):
        return True
    if declares_field(var.lower(), text):
        return True
    has_prefix = re.search(rf"""['"]{re.escape(prefix)}['"]""", text, re.IGNORECASE) is not None
    return var.startswith(prefix) and has_prefix and declares_field(var[len(prefix):].lower(), text)


def volume_mounts(name: str) -> set[tuple[str, str, bool]]:
    mounts = set()
    for entry in service(name).get("volumes") or []:
        if isinstance(entry, dict):
            mounts.add((entry["source"], entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        mounts.add((parts[0], parts[1], "ro" in mode.split(",")))
    return mounts


def host_port(address: str) -> tuple[str, int]:
    address = re.sub(r"^\w+://", "", address).rstrip("/")
    host, _, port = address.rpartition(":")
    return host, int(port)


def healthcheck_text(name: str) -> str:
    test = (service(name).get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


# ---------------------------------------------------------------- structure


def test_compose_declares_exactly_the_stack_services():
    assert set(SERVICES) == EXPECTED_SERVICES, (
        f"services differ: missing {sorted(EXPECTED_SERVICES - set(SERVICES))}, "
        f"unexpected {sorted(set(SERVICES) - EXPECTED_SERVICES)}"
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_service_has_an_image_or_a_build_whose_dockerfile_exists(name):
    spec = service(name)
    assert "image" in spec or "build" in spec, f"{name}: neither image nor build"
    if "build" in spec:
        build = spec["build"]
        context = build.get("context") if isinstance(build, dict) else build
        assert context == ".", f"{name}: build context must be the repository root (for protos/), not {context!r}"
        assert dockerfile_path(name).is_file(), f"{name}: Dockerfile {dockerfile_path(name)} does not exist"


@pytest.mark.parametrize("name", BUILT_SERVICES_WITH_CODE)
def test_built_service_has_its_sources(name):
    folder = ROOT / BUILT_SERVICES[name]
    if name == "nginx":
        assert (folder / "public").is_dir(), f"nginx: {folder / 'public'} (static page) does not exist yet"
        assert NGINX_TEMPLATE.is_file(), f"nginx: {NGINX_TEMPLATE} does not exist yet"
        return
    _, package, _ = PY_SERVICES[name]
    assert (folder / "pyproject.toml").is_file(), f"{name}: {folder / 'pyproject.toml'} does not exist yet"
    assert (folder / package / "__init__.py").is_file(), f"{name}: package {folder / package} does not exist yet"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_health_check_and_restarts(name):
    spec = service(name)
    check = spec.get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{name}: no health check"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check, f"{name}: health check lacks {key}"
    assert spec.get("restart") == "unless-stopped", f"{name}: restart is {spec.get('restart')!r}"


@pytest.mark.parametrize("name", ["asr", "vision-chat"])
def test_model_services_get_a_start_period_long_enough_to_load_a_model(name):
    start_period = duration_s(service(name)["healthcheck"]["start_period"])
    assert start_period >= 300, f"{name}: start_period {start_period}s is too short for a model download/load"


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_service_never_restarts(name):
    assert service(name).get("restart") == "no", f"{name}: restart must be \"no\""


@pytest.mark.parametrize("name", sorted(EXPECTED_DEPENDS_ON))
def test_start_order_goes_through_health_checks(name):
    depends = service(name).get("depends_on") or {}
    assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
    actual = {dep: (spec or {}).get("condition") for dep, spec in depends.items()}
    assert actual == EXPECTED_DEPENDS_ON[name], f"{name}: depends_on {actual} != {EXPECTED_DEPENDS_ON[name]}"


def test_ollama_image_is_pinned_to_an_exact_release_that_runs_mllama():
    image = service("ollama")["image"]
    match = re.fullmatch(r"ollama/ollama:(\d+)\.(\d+)\.(\d+)", image)
    assert match, f"ollama image {image!r} is not pinned to an exact X.Y.Z tag"
    version = tuple(int(part) for part in match.groups())
    # mllama (llama3.2-vision) arrived in 0.4.0; 0.30 and later fail to load it.
    assert (0, 4, 0) <= version < (0, 30, 0), f"ollama {version} cannot run llama3.2-vision"


def test_ollama_pull_uses_the_ollama_image_and_the_chat_model():
    pull = service("ollama-pull")
    assert pull["image"] == service("ollama")["image"], "ollama-pull must use the pinned ollama image"
    assert host_port(env("ollama-pull")["OLLAMA_HOST"]) == ("ollama", 11434)
    assert raw_env("ollama-pull").get("CHAT_MODEL") == raw_env("vision-chat")["CHAT_MODEL"], (
        "ollama-pull and vision-chat must agree on CHAT_MODEL"
    )
    assert env("vision-chat")["CHAT_MODEL"] == "llama3.2-vision"
    command = " ".join(pull.get("command") or []) if isinstance(pull.get("command"), list) else str(pull.get("command"))
    assert "ollama pull" in command, "ollama-pull does not run `ollama pull`"


def test_named_volumes_are_declared():
    declared = set(COMPOSE.get("volumes") or {})
    expected = {"models", "ollama", "adapters", "data", "tls"}
    assert expected <= declared, f"undeclared volumes: {sorted(expected - declared)}"


@pytest.mark.parametrize("name", sorted(EXPECTED_MOUNTS))
def test_service_mounts_its_volumes_where_stated(name):
    missing = EXPECTED_MOUNTS[name] - volume_mounts(name)
    assert not missing, f"{name}: missing mounts (volume, target, read_only) {sorted(missing)}"
    declared = set(COMPOSE.get("volumes") or {})
    for source, target, _ in volume_mounts(name):
        assert source in declared, f"{name}: mounts {source!r} at {target}, which is no named volume"


@pytest.mark.parametrize("name", GPU_SERVICES)
def test_gpu_service_reserves_nvidia_gpus(name):
    devices = (((service(name).get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    assert devices, f"{name}: no deploy.resources.reservations.devices"
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []) for device in devices
    ), f"{name}: no nvidia device with capability gpu in {devices}"


def test_trainer_sits_behind_a_profile():
    assert "train" in (service("trainer").get("profiles") or []), "trainer must be in profile 'train'"


def test_only_nginx_publishes_ports():
    publishing = sorted(name for name, spec in SERVICES.items() if spec.get("ports"))
    assert publishing == ["nginx"], f"services publishing host ports: {publishing}"


# ---------------------------------------------------------------- variables


@pytest.mark.parametrize("name", PY_SERVICES_WITH_CODE)
def test_every_variable_set_for_a_python_service_is_read_by_its_code(name):
    folder, package, prefix = PY_SERVICES[name]
    code = ROOT / folder / package
    assert code.is_dir(), f"{name}: source folder {code} does not exist yet, cannot check its variables"
    text = source_text(code)
    unread = [
        var for var in raw_env(name) if var not in LIBRARY_ENV and not read_by_code(var, prefix, text)
    ]
    assert not unread, f"{name}: variables set in docker-compose.yml that {folder}/{package} never reads: {unread}"


def test_every_variable_set_for_nginx_is_used_by_the_template_or_the_entrypoint():
    assert NGINX_TEMPLATE.is_file(), f"nginx: {NGINX_TEMPLATE} does not exist yet"
    template = NGINX_TEMPLATE.read_text()
    scripts = "\n".join(path.read_text() for path in sorted(ENTRYPOINT_SCRIPTS.glob("*.sh")))
    unused = [
        var
        for var in raw_env("nginx")
        if f"${{{var}}}" not in template and not re.search(rf"\$\{{?{var}\b", scripts)
    ]
    assert not unused, f"nginx: variables used neither by the template nor by docker-entrypoint.d: {unused}"


def test_every_placeholder_of_the_nginx_template_is_set():
    assert NGINX_TEMPLATE.is_file(), f"nginx: {NGINX_TEMPLATE} does not exist yet"
    placeholders = set(re.findall(r"\$\{([A-Za-z_]\w*)\}", NGINX_TEMPLATE.read_text()))
    missing = sorted(placeholders - set(raw_env("nginx")))
    assert not missing, f"nginx: template placeholders not set in its environment: {missing}"


def test_ollama_variables_are_ones_ollama_reads():
    unknown = sorted(set(raw_env("ollama")) - OLLAMA_ENV)
    assert not unknown, f"ollama: unknown variables {unknown}"
    assert env("ollama").get("OLLAMA_NUM_PARALLEL") == "1", "ollama: OLLAMA_NUM_PARALLEL must be 1 for mllama"


def test_ollama_pull_variables_are_read_by_ollama_or_its_command():
    command = str(service("ollama-pull").get("command"))
    unused = [
        var
        for var in raw_env("ollama-pull")
        if var not in OLLAMA_ENV and not re.search(rf"\$\$\{{?{var}\b", command)
    ]
    assert not unused, f"ollama-pull: variables neither Ollama nor its command reads: {unused}"


def test_upload_limit_is_one_value_for_nginx_gateway_and_services():
    values = {name: raw_env(name).get("MAX_UPLOAD_MB") for name in ("nginx", "gateway", "asr", "vision-chat")}
    assert None not in values.values(), f"MAX_UPLOAD_MB missing in {[n for n, v in values.items() if v is None]}"
    assert len(set(values.values())) == 1, f"MAX_UPLOAD_MB differs between services: {values}"
    assert resolve(values["nginx"]) == "25"


@pytest.mark.parametrize("name", ["asr", "vision-chat", "gateway"])
def test_python_services_bind_all_interfaces_and_share_models_dir(name):
    host_var = {"asr": "ASR_HOST", "vision-chat": "CHAT_HOST", "gateway": "GATEWAY_HOST"}[name]
    assert env(name).get(host_var) == "0.0.0.0", f"{name}: {host_var} must be 0.0.0.0 in a container"
    if name != "gateway":
        assert env(name).get("MODELS_DIR") == "/models", f"{name}: MODELS_DIR must be /models"


def test_chat_service_uses_the_ollama_backend_and_the_adapters_volume():
    chat = env("vision-chat")
    assert chat.get("CHAT_BACKEND") == "ollama"
    assert host_port(chat["OLLAMA_URL"]) == ("ollama", 11434)
    assert env("trainer").get("ADAPTERS_DIR") == "/adapters"


# ---------------------------------------------------------------- ports


def test_published_ports_reach_the_ports_nginx_listens_on():
    nginx = env("nginx")
    listening = {int(nginx[var]) for var in PORT_VARS["nginx"]}
    targets = set()
    for entry in service("nginx")["ports"]:
        target = entry["target"] if isinstance(entry, dict) else resolve(entry).rsplit(":", 1)[-1]
        targets.add(int(str(target).split("/")[0]))
    assert targets == listening, f"nginx: published container ports {sorted(targets)} != listening {sorted(listening)}"
    assert listening == {8080, 8443}


@pytest.mark.parametrize(
    "client, var, target, port_var",
    [
        ("gateway", "ASR_ADDR", "asr", "ASR_PORT"),
        ("gateway", "CHAT_ADDR", "vision-chat", "CHAT_PORT"),
        ("nginx", "GATEWAY_ADDR", "gateway", "GATEWAY_PORT"),
    ],
)
def test_addresses_point_at_the_port_the_target_listens_on(client, var, target, port_var):
    host, port = host_port(env(client)[var])
    assert host == target, f"{client}: {var} host {host!r} is not the service {target!r}"
    assert port == int(env(target)[port_var]), f"{client}: {var} port {port} != {target}'s {port_var}"


@pytest.mark.parametrize("name", sorted(PORT_VARS))
def test_dockerfile_expose_matches_the_configured_ports(name):
    exposed = set()
    for keyword, args in dockerfile_instructions(dockerfile_path(name)):
        if keyword == "EXPOSE":
            exposed |= {int(port.split("/")[0]) for port in args.split()}
    configured = {int(env(name)[var]) for var in PORT_VARS[name]}
    assert exposed == configured, f"{name}: EXPOSE {sorted(exposed)} != configured ports {sorted(configured)}"


@pytest.mark.parametrize("name", ["asr", "vision-chat", "gateway", "nginx"])
def test_health_check_probes_the_configured_port(name):
    text = healthcheck_text(name)
    for var in PORT_VARS[name]:
        assert var in text or env(name)[var] in text, f"{name}: health check does not probe {var}"


@pytest.mark.parametrize("name", ["asr", "vision-chat"])
def test_grpc_services_are_probed_with_the_copied_health_script(name):
    assert "grpc_healthcheck.py" in healthcheck_text(name), f"{name}: health check is not grpc_healthcheck.py"
    copies = [
        args for keyword, args in dockerfile_instructions(dockerfile_path(name))
        if keyword == "COPY" and "docker/grpc_healthcheck.py" in args
    ]
    assert copies, f"{name}: Dockerfile does not copy docker/grpc_healthcheck.py"


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("name", sorted(PY_SERVICES))
def test_python_image_runs_as_an_unprivileged_user_unbuffered(name):
    instructions = dockerfile_instructions(dockerfile_path(name))
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{name}: image does not end with a non-root USER"
    envs = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in envs, f"{name}: PYTHONUNBUFFERED=1 not set"


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    assert path.is_file(), ".dockerignore is missing"
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        bare = pattern.removeprefix("**/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch(part, bare) for part in parts):
            return True
    return False


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = dockerignore_patterns()
    for path in (".venv", ".cache", ".run", ".git", "tests", "protos/x/__pycache__", "protos/chatbot_protos.egg-info"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"


@pytest.mark.parametrize("name", sorted(BUILT_SERVICES))
def test_dockerfile_copies_only_files_that_exist_in_the_build_context(name):
    patterns = dockerignore_patterns()
    for keyword, args in dockerfile_instructions(dockerfile_path(name)):
        if keyword not in ("COPY", "ADD"):
            continue
        words = [word for word in args.split() if not word.startswith("--")]
        if any(word.startswith("--from") for word in args.split()):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY source {source} does not exist"
            assert not ignored(source.rstrip("/"), patterns), f"{name}: COPY source {source} is in .dockerignore"


def test_frontend_image_renders_the_template_and_makes_the_certificate():
    instructions = dockerfile_instructions(dockerfile_path("nginx"))
    assert instructions[0] == ("FROM", "nginx:1.27")
    copies = " ".join(args for keyword, args in instructions if keyword == "COPY")
    assert "/etc/nginx/templates/default.conf.template" in copies
    assert "/docker-entrypoint.d/" in copies and CERT_SCRIPT.name in copies
    assert env("nginx")["TLS_CERT_DIR"] == "/etc/nginx/tls"


def compose_binary() -> list[str] | None:
    """Docker Compose v2, as a CLI plugin or standalone, where one is installed (no engine needed)."""
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    if plugin.is_file():
        return [str(plugin)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_itself_accepts_the_file():
    """`docker compose config` validates against the Compose schema (keys, types, merges)."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary here; the YAML checks above still ran")
    done = subprocess.run([*binary, "--profile", "train", "-f", str(COMPOSE_FILE), "config", "-q"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- least privilege
# One rule per property, over every service; the exceptions are named here with their reason.

# May keep a writable root filesystem.
WRITABLE_ROOT = {
    "ollama": "upstream image, as root, writing /root/.ollama; a read-only root is unverified with its GPU runners",
    "ollama-pull": "the upstream ollama image used as a client; same image as ollama",
    "trainer": "one-shot job whose libraries cache into $HOME at run time (Triton for Liger, matplotlib)",
}
# May run as root: only images we do not build.
RUNS_AS_ROOT = {
    "ollama": "upstream ollama/ollama runs as root and keeps models in /root/.ollama (ollama/ollama#5986); "
              "moving that path needs checking on the GPU server with the pinned release",
    "ollama-pull": "the same upstream image",
}
# What each read-only service writes, as paths or $VARIABLES of its environment: each
# must be a volume or a tmpfs. /tmp: Python's tempfile (the gateway spools uploads there).
WRITTEN = {
    "asr": ["/tmp", "$MODELS_DIR"],
    "vision-chat": ["/tmp", "$MODELS_DIR"],
    "gateway": ["/tmp", "$GATEWAY_DATA_DIR"],
    # The entrypoint renders the template into conf.d and makes the certificate at start.
    "nginx": ["$NGINX_TEMP_DIR", "/etc/nginx/conf.d", "$TLS_CERT_DIR"],
}
ROOT_USERS = {"root", "0", "0:0"}


def tmpfs_paths(name: str) -> set[str]:
    entries = service(name).get("tmpfs") or []
    return {entry.split(":", 1)[0] for entry in ([entries] if isinstance(entries, str) else entries)}


def mounted(name: str, path: str) -> bool:
    """The path is a tmpfs or a volume of the service, or lies inside one."""
    targets = tmpfs_paths(name) | {target for _, target, _ in volume_mounts(name)}
    return any(path == target or path.startswith(target.rstrip("/") + "/") for target in targets)


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES - set(WRITABLE_ROOT)))
def test_service_runs_with_a_read_only_root_filesystem(name):
    assert service(name).get("read_only") is True, f"{name}: read_only is not true"
    assert name in WRITTEN, f"{name}: say in WRITTEN which paths it writes"


@pytest.mark.parametrize("name", sorted(WRITABLE_ROOT))
def test_each_writable_root_exception_is_still_one_and_says_why(name):
    assert name in EXPECTED_SERVICES and WRITABLE_ROOT[name].strip()
    assert not service(name).get("read_only"), f"{name} is read-only now: drop it from WRITABLE_ROOT"


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_read_only_service_has_a_volume_or_tmpfs_for_every_path_it_writes(name):
    paths = [env(name)[item[1:]] if item.startswith("$") else item for item in WRITTEN[name]]
    unwritable = [path for path in paths if not mounted(name, path)]
    assert not unwritable, f"{name}: writes {unwritable}, which are neither a volume nor a tmpfs"


def test_nginx_pid_file_is_written_where_it_may_write():
    """The stock nginx.conf puts it in /var/run, which a non-root master cannot write."""
    text = dockerfile_path("nginx").read_text()
    pid = re.search(r"pid (/\S+);", text)
    assert pid, "frontend/Dockerfile does not move nginx's pid file"
    where = str(Path(pid.group(1)).parent)
    assert mounted("nginx", where), f"nginx: the pid file {pid.group(1)} is on the read-only root"


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_service_drops_every_capability(name):
    spec = service(name)
    assert [cap.upper() for cap in spec.get("cap_drop") or []] == ["ALL"], f"{name}: cap_drop is not [ALL]"
    assert not spec.get("cap_add"), f"{name}: adds capabilities {spec.get('cap_add')}"
    assert not spec.get("privileged"), f"{name}: privileged"


@pytest.mark.parametrize("name", sorted(PORT_VARS))
def test_nothing_listens_below_1024_so_no_capability_is_needed(name):
    low = {var: env(name)[var] for var in PORT_VARS[name] if int(env(name)[var]) < 1024}
    assert not low, f"{name}: ports below 1024 need CAP_NET_BIND_SERVICE: {low}"


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_service_cannot_gain_privileges(name):
    options = [option.replace("=", ":") for option in service(name).get("security_opt") or []]
    assert "no-new-privileges:true" in options, f"{name}: security_opt lacks no-new-privileges:true"


@pytest.mark.parametrize("name", sorted(RUNS_AS_ROOT))
def test_only_images_we_do_not_build_may_run_as_root_and_each_says_why(name):
    assert name in EXPECTED_SERVICES and RUNS_AS_ROOT[name].strip()
    assert "build" not in service(name), f"{name}: an image we build must not run as root ({RUNS_AS_ROOT[name]})"


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES - set(RUNS_AS_ROOT)))
def test_service_runs_as_a_non_root_user(name):
    spec = service(name)
    assert str(spec.get("user", "")) not in ROOT_USERS, f"{name}: compose sets user {spec['user']!r}"
    if "user" not in spec:
        users = [args for keyword, args in dockerfile_instructions(dockerfile_path(name)) if keyword == "USER"]
        assert users and users[-1] not in ROOT_USERS, f"{name}: its Dockerfile does not end with a non-root USER"


# ---------------------------------------------------------------- helpers, run for real


@pytest.fixture
def health_server() -> Iterator[tuple[str, object]]:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def run_probe(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GRPC_HEALTHCHECK), target], capture_output=True, text=True, timeout=30
    )


def test_grpc_health_probe_passes_only_when_serving(health_server):
    from grpc_health.v1 import health_pb2

    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_serving = run_probe(target)
    assert not_serving.returncode == 1, not_serving.stdout + not_serving.stderr
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    serving = run_probe(target)
    assert serving.returncode == 0, serving.stdout + serving.stderr
    assert "SERVING" in serving.stdout


def test_grpc_health_probe_fails_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_probe(f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stdout + result.stderr


def test_certificate_script_makes_a_certificate_once_with_the_names_given(tmp_path):
    cert_dir = tmp_path / "tls"
    environment = {"PATH": "/usr/bin:/bin", "TLS_CERT_DIR": str(cert_dir), "TLS_HOSTNAMES": "chat.lan, 192.168.1.20"}
    first = subprocess.run(["sh", str(CERT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    cert, key = cert_dir / "cert.pem", cert_dir / "key.pem"
    assert cert.is_file() and key.is_file()
    assert key.stat().st_mode & 0o077 == 0, "key.pem must be readable by its owner only"
    san = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:chat.lan", "IP Address:192.168.1.20"):
        assert name in san, f"certificate lacks {name}: {san}"
    before = cert.read_bytes()
    second = subprocess.run(["sh", str(CERT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert cert.read_bytes() == before, "an existing certificate must be kept across restarts"


def test_certificate_script_renews_its_own_certificate_near_expiry_and_never_a_real_one(tmp_path):
    cert_dir = tmp_path / "tls"
    environment = {"PATH": "/usr/bin:/bin", "TLS_CERT_DIR": str(cert_dir)}
    made = subprocess.run(["sh", str(CERT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    cert, key = cert_dir / "cert.pem", cert_dir / "key.pem"
    # Mozilla's "intermediate" profile: at most 366 days (tests/hostile/test_tls_scan.py scans the native one).
    assert certificate_days(cert) == 365
    assert (cert_dir / "self-signed").is_file()

    # Its own certificate, 10 days from expiry: replaced by a new one of 365 days.
    short_lived_pair(cert, key)
    renewed = subprocess.run(["sh", str(CERT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert renewed.returncode == 0 and "expires within 30 days" in renewed.stdout, renewed.stdout + renewed.stderr
    assert certificate_days(cert) == 365

    # A pair put there by hand (no mark): kept even when it is about to expire.
    (cert_dir / "self-signed").unlink()
    short_lived_pair(cert, key)
    before = cert.read_bytes()
    kept = subprocess.run(["sh", str(CERT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)
    assert kept.returncode == 0 and cert.read_bytes() == before, kept.stdout + kept.stderr
