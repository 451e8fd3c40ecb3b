"""Every locked dependency is free of known vulnerabilities (issue 8, security).

The Makefile installs each venv with `pip install -c <lock>`; the locks are
written by scripts/lock_requirements.py. This test runs pip-audit over each
lock (`--disable-pip --no-deps`: the lock is already the full, exact list, so
no resolver runs) against PyPI's vulnerability data, and fails listing
package, version, vulnerability and the versions that fix it.

Where PyPI cannot be asked per release: pip-audit reads
https://pypi.org/pypi/NAME/VERSION/json, which the package mirror of this
workplace (and so CI) answers with 404 ("Dependency not found on PyPI"),
while the project's page, /pypi/NAME/json, is served: its `vulnerabilities`
are those of the latest release. So a package pip-audit skipped is checked
there instead: exactly when the locked version is the latest release; for an
older locked version, a vulnerability of the latest release that no release
fixes yet is reported too (it affects the older one as well, unless it came
later). Older locked versions that this cannot clear are listed in a warning
(pytest's warnings summary), so a reviewer sees how much was checked instead
of a silent pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from scripts.lock_requirements import LOCKS, REPO

# Vulnerabilities we knowingly keep, by id (PYSEC-…, GHSA-…, CVE-…), each with
# why it cannot be fixed by a bump now and why it does not reach us. The one
# place for exceptions: pip-audit gets them as --ignore-vuln.
IGNORED: dict[str, str] = {}

PIP_AUDIT = Path(sys.executable).parent / "pip-audit"
PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"


@dataclass(frozen=True)
class Finding:
    lock: str
    name: str
    version: str
    vuln: str
    fixed_in: tuple[str, ...]
    how: str  # "pip-audit" or "latest release's page"

    def __str__(self) -> str:
        fixed = ", ".join(self.fixed_in) or "no fixed release"
        return f"{self.lock}: {self.name}=={self.version} {self.vuln} (fixed in: {fixed}) [{self.how}]"


@dataclass
class Audit:
    findings: list[Finding] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)  # "lock: name==version (latest X)"
    audited: int = 0


def locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path}: {line!r} is not an exact pin"
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    """PEP 503 normalisation, as pip-audit names packages (pydantic_core → pydantic-core)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def run_pip_audit(lock: Path) -> list[dict]:
    command = [str(PIP_AUDIT), "--disable-pip", "--no-deps", "-r", str(lock), "--format", "json",
               "--progress-spinner", "off", "--timeout", "60"]
    for vuln in IGNORED:
        command += ["--ignore-vuln", vuln]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    # Exit 1 means "vulnerabilities found"; the JSON says which. Anything else is a failure to run.
    assert done.returncode in (0, 1) and done.stdout.strip(), f"pip-audit failed on {lock}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)["dependencies"]


@cache
def project_page(name: str) -> dict | None:
    try:
        with urllib.request.urlopen(PYPI_PROJECT.format(name=name), timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def audit_on_project_page(lock: str, name: str, version: str, audit: Audit) -> None:
    page = project_page(name)
    if page is None:
        audit.unaudited.append(f"{lock}: {name}=={version} (not on PyPI)")
        return
    latest = page["info"]["version"]
    vulns = [v for v in page.get("vulnerabilities") or [] if not v.get("withdrawn")
             and v["id"] not in IGNORED and not set(v.get("aliases") or ()) & set(IGNORED)]
    if version == latest:
        audit.audited += 1
        audit.findings += [Finding(lock, name, version, v["id"], tuple(v.get("fixed_in") or ()),
                                   "latest release's page") for v in vulns]
        return
    audit.findings += [Finding(lock, name, version, v["id"], (), f"unfixed in the latest release {latest}")
                       for v in vulns if not v.get("fixed_in")]
    audit.unaudited.append(f"{lock}: {name}=={version} (latest {latest})")


@pytest.fixture(scope="module")
def audit() -> Audit:
    result = Audit()
    skipped: list[tuple[str, str, str]] = []
    for venv, path in LOCKS.items():
        lock = str(path.relative_to(REPO))
        pins = locked(path)
        for dependency in run_pip_audit(path):
            name = dependency["name"]
            version = dependency.get("version") or pins.get(canonical(name), "?")
            if dependency.get("skip_reason"):
                skipped.append((lock, name, version))
                continue
            result.audited += 1
            result.findings += [Finding(lock, name, version, v["id"], tuple(v.get("fix_versions") or ()),
                                        "pip-audit") for v in dependency.get("vulns") or ()]
    with ThreadPoolExecutor(8) as pool:  # warms the page cache; each project is fetched once
        list(pool.map(project_page, sorted({name for _, name, _ in skipped})))
    for lock, name, version in skipped:
        audit_on_project_page(lock, name, version, result)
    return result


def makefile_expanded() -> str:
    """The Makefile with its `NAME := value` variables substituted (one level, as it uses them)."""
    text = (REPO / "Makefile").read_text()
    for name, value in re.findall(r"^([A-Z_]+)\s*:=\s*(.*?)\s*$", text, re.MULTILINE):
        text = text.replace(f"$({name})", value)
    return text


def test_there_is_a_lock_per_venv_and_the_makefile_installs_with_it():
    makefile = makefile_expanded()
    for venv, path in LOCKS.items():
        assert path.is_file(), f"{path} is missing: run scripts/lock_requirements.py {venv}"
        assert locked(path), f"{path} pins nothing"
        lock = str(path.relative_to(REPO))
        installs = [line for line in makefile.splitlines() if f".venv/{venv}/bin/pip install" in line]
        assert installs, f"the Makefile never installs into .venv/{venv}"
        unlocked = [line.strip() for line in installs if f"-c {lock}" not in line]
        assert not unlocked, f"installs into .venv/{venv} without -c {lock}: {unlocked}"


# What the Makefile installs into each venv, whose exact pins the lock must agree with
# (or `pip install -c` fails: rerun scripts/lock_requirements.py after changing a pin).
PIN_SOURCES = {
    "asr": ["asr-service/pyproject.toml", "asr-service/requirements-openai-whisper-cpu.txt"],
    "chat": ["vision-chat-service/pyproject.toml", "vision-chat-service/requirements-embedded.txt"],
    "gateway": ["gateway/pyproject.toml"],
    "trainer": ["trainer/pyproject.toml"],
    "test": ["tests/requirements.txt"],
}
# `"name[extra]==1.2"` anywhere in a pyproject; `name==1.2` at the start of a requirements line.
_PINS = {".toml": re.compile(r'"([A-Za-z0-9][\w.\-]*)(?:\[[^\]]*\])?==([^";,\s]+)'),
         ".txt": re.compile(r"^([A-Za-z0-9][\w.\-]*)(?:\[[^\]]*\])?==(\S+)", re.MULTILINE)}


def exact_pins(source: str) -> list[tuple[str, str]]:
    path = REPO / source
    return _PINS[path.suffix].findall(path.read_text())


@pytest.mark.parametrize("venv", sorted(PIN_SOURCES))
def test_the_lock_agrees_with_every_exact_pin_of_the_venv(venv):
    pins = locked(LOCKS[venv])
    sources = [*PIN_SOURCES[venv], "protos/pyproject.toml"] if venv != "trainer" else PIN_SOURCES[venv]
    disagree = [f"{source}: {name}=={version}, lock {pins[canonical(name)]}"
                for source in sources for name, version in exact_pins(source)
                if canonical(name) in pins and pins[canonical(name)] != version.split("+", 1)[0]]
    assert not disagree, f"{LOCKS[venv].name} of .venv/{venv} is stale (scripts/lock_requirements.py): {disagree}"


@pytest.mark.parametrize("venv", ["asr", "chat", "gateway", "trainer"])
def test_the_service_image_installs_with_the_same_lock(venv):
    lock = LOCKS[venv].relative_to(REPO)
    dockerfile = REPO / lock.parent / "Dockerfile"
    joined = re.sub(r"\\\n\s*", " ", dockerfile.read_text())  # continuation lines as one
    installs = [line for line in joined.splitlines()
                if line.startswith("RUN pip install") and re.search(rf"/app/{lock.parent}\b(?!/)", line)]
    assert installs, f"{dockerfile} does not pip install /app/{lock.parent}"
    assert all(f"-c /app/{lock}" in line for line in installs), f"{dockerfile}: install without -c /app/{lock}"


def test_no_locked_dependency_has_a_known_vulnerability(audit):
    assert audit.audited, "nothing could be audited: neither pip-audit nor PyPI's project pages answered"
    if audit.unaudited:  # said in the warnings summary, not hidden: the audit is partial where PyPI is
        warnings.warn(f"audited {audit.audited} locked versions; {len(audit.unaudited)} older than their "
                      "latest release could not be, since PyPI's per-release pages are not served here: "
                      + "; ".join(audit.unaudited), stacklevel=1)
    assert not audit.findings, "known vulnerabilities (bump the pin, or add the id to IGNORED with the reason):\n" \
        + "\n".join(map(str, audit.findings))


def test_every_ignored_vulnerability_says_why():
    assert all(reason.strip() for reason in IGNORED.values())

