"""A throwaway PostgreSQL server for the tests: Debian's server binaries
(`make test` installs the package), a fresh cluster in a temporary folder,
listening on a free loopback port, removed afterwards.

PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` system user that the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from scripts.stack import free_port

DATABASE = "chatbot_test"


def server_binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed: `make test` installs the Debian package "
                           "postgresql (or: apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else command


@contextmanager
def postgres_server():
    """Yields the server's URL, postgresql://user@127.0.0.1:port/chatbot_test."""
    binaries = server_binaries()
    owner = "postgres" if os.geteuid() == 0 else None
    user = owner or pwd.getpwuid(os.geteuid()).pw_name
    # Not under /tmp/pytest-of-root: the postgres user must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="chatbot-pg-"))
    data = root / "data"
    port = free_port()
    if owner:
        shutil.chown(root, owner)
    run = lambda *command: subprocess.run(_as_owner(list(command), owner), check=True,  # noqa: E731
                                          capture_output=True, text=True)
    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--locale=C")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off")
        _create_database(binaries, user, port, owner)
        yield f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if data.exists():
            subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], owner),
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _create_database(binaries: Path, user: str, port: int, owner: str | None) -> None:
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(_as_owner([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user,
                                         DATABASE], owner), capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"createdb failed: {done.stderr}")
        time.sleep(0.3)
