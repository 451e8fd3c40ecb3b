"""Reads an uploaded file from a multipart form, refusing the wrong kind early."""

from __future__ import annotations

from starlette.datastructures import UploadFile

from .errors import ApiError, bad_request

# Browsers and curl label files differently (Chrome records audio as
# "video/webm" at times, curl sends "application/octet-stream" for unknown
# extensions); the services look at the bytes, so only clearly wrong labels
# are refused here.
_GENERIC_TYPES = {"", "application/octet-stream"}
ACCEPTED_PREFIXES = {"image": ("image/",), "audio": ("audio/", "video/webm", "video/mp4", "video/ogg")}


def is_present(upload: UploadFile | None) -> bool:
    # An empty file input in a browser form arrives as a part with no filename.
    # (FastAPI's UploadFile subclasses Starlette's, but the object it hands over
    # is Starlette's, so the check must use the base class.)
    return isinstance(upload, UploadFile) and bool(upload.filename)


async def read_upload(upload: UploadFile, field: str, kind: str) -> tuple[bytes, str]:
    mime = (upload.content_type or "").split(";")[0].strip().lower()
    if mime not in _GENERIC_TYPES and not mime.startswith(ACCEPTED_PREFIXES[kind]):
        raise ApiError(415, f"{field} has type {mime}; send an {kind} file", "unsupported_media_type")
    data = await upload.read()
    if not data:
        raise bad_request(f"{field} is empty")
    return data, upload.content_type or ""
