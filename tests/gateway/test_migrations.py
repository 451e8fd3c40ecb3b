"""The Alembic migrations build exactly the schema the models describe, on
SQLite and on PostgreSQL, and running them again changes nothing. Runs in the
gateway's own virtualenv (the test venv has no SQLAlchemy)."""

from __future__ import annotations

import subprocess

import pytest

from scripts.stack import REPO

# Migrates twice, then lists what autogenerate would still change (nothing, if they agree).
CHECK = """
import asyncio, sys
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from gateway.db.engine import Database
from gateway.db.models import Base

async def main(url):
    database = Database(url)
    await database.migrate()
    await database.migrate()
    async with database.engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}),
                                          Base.metadata))
        tables = await connection.run_sync(lambda sync: sorted(sync.dialect.get_table_names(sync)))
    await database.close()
    print("tables:", ",".join(tables))
    print("diff:", diff)

asyncio.run(main(sys.argv[1]))
"""


def check(url: str) -> str:
    done = subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-c", CHECK, url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    # A database of its own on the test server, so the secured front's tables do not interfere.
    url = request.getfixturevalue("postgres_url")
    for statement in ("DROP DATABASE IF EXISTS migrations_check", "CREATE DATABASE migrations_check"):
        subprocess.run(["psql", url, "-qc", statement], check=True, capture_output=True)
    return url.rsplit("/", 1)[0] + "/migrations_check"


def test_migrations_build_the_models_schema_and_are_idempotent(database_url):
    output = check(database_url)
    assert "diff: []" in output, output
    tables = output.split("tables: ", 1)[1].splitlines()[0].split(",")
    assert {"users", "api_keys", "sessions", "conversations", "messages", "images", "message_images",
            "alembic_version"} <= set(tables)
