"""When the gateway cannot write its own data: a full or read-only data volume.

Conversations live in the database (SQLite in GATEWAY_DATA_DIR, or PostgreSQL)
and images in GATEWAY_DATA_DIR/images. A write there can fail because the disk
is full or the volume is read-only; that is the operator's problem to fix, not
a bug, so the caller gets a plain answer instead of a 500 — 507 (full) or 503
(cannot write) — and the gateway goes on serving. Nothing half-written
remains: images are written under a temporary name and renamed, database
writes are transactions.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from .errors import ApiError, error_response

log = logging.getLogger(__name__)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
# How the databases say it: SQLite's messages, PostgreSQL's SQLSTATE class 53 (insufficient resources).
_SQLITE_FULL = "database or disk is full"
_SQLITE_READ_ONLY = ("attempt to write a readonly database", "unable to open database file")
_POSTGRES_DISK_FULL = "53100"


def storage_full() -> ApiError:
    return ApiError(507, "the gateway's storage is full: nothing was stored. Free space on its data volume "
                         "(GATEWAY_DATA_DIR, or the database server) and send again", "storage_full")


def storage_unwritable() -> ApiError:
    return ApiError(503, "the gateway cannot write its data (a read-only volume or missing permission): "
                         "nothing was stored", "storage_unavailable")


def storage_failure(error: BaseException) -> ApiError | None:
    """The answer for a failed write to the gateway's own storage; None when `error` is something else."""
    if isinstance(error, OSError) and error.errno is not None:
        if error.errno in _FULL_ERRNOS:
            return storage_full()
        if error.errno in _UNWRITABLE_ERRNOS:
            return storage_unwritable()
        return None
    if isinstance(error, DBAPIError):
        text = str(error.orig).lower()
        if _SQLITE_FULL in text or getattr(error.orig, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return storage_full()
        if any(phrase in text for phrase in _SQLITE_READ_ONLY):
            return storage_unwritable()
    return None


def install_storage_handlers(app) -> None:
    """Failed writes to the gateway's storage answer 507/503 instead of 500."""

    async def _storage(request, error: Exception):
        failure = storage_failure(error)
        if failure is None:
            log.error("unhandled error on %s", request.url.path, exc_info=error)
            failure = ApiError(500, "internal error in the gateway; see its log", "internal")
        else:
            log.error("could not store for %s: %s", request.url.path, error)
        return error_response(failure)

    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(DBAPIError, _storage)


def check_data_dir(path: Path) -> None:
    """Exits with one plain line when GATEWAY_DATA_DIR cannot be written, before
    the server starts, rather than with a database traceback from its start-up."""
    probe = path / ".write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"gateway: GATEWAY_DATA_DIR {path} cannot be written ({error.strerror}): the "
                         "conversations database and stored images live there") from None
