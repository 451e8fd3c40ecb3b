"""One error shape for every HTTP error, `{"error": ..., "error_type": ...}`, and
the one table that turns gRPC status codes from the model services into HTTP."""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# gRPC code → (HTTP status, error_type). DESIGN.md §2.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "busy"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented"),
}
_UNKNOWN = (502, "backend_error")

# Services may name the precise problem in the trailing metadata "error-type"
# (asr-service does); it becomes the body's error_type, and these few also
# choose a more precise HTTP status than their gRPC code gives.
ERROR_TYPE_METADATA_KEY = "error-type"
STATUS_BY_ERROR_TYPE = {"audio_too_large": 413, "audio_too_long": 413}
BUSY_RETRY_AFTER_S = "2"


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.headers = headers or {}  # Retry-After on 429s, WWW-Authenticate on 401s

    def body(self) -> dict:
        return {"error": self.message, "error_type": self.error_type}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request")


def _error_type_from_metadata(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_TYPE_METADATA_KEY:
            return value
    return None


def from_grpc(error: grpc.aio.AioRpcError, service: str) -> ApiError:
    status, error_type = GRPC_TO_HTTP.get(error.code(), _UNKNOWN)
    if precise := _error_type_from_metadata(error):
        status, error_type = STATUS_BY_ERROR_TYPE.get(precise, status), precise
    details = error.details() or error.code().name
    if error.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        details = f"the {service} service is not reachable"
    elif error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"the {service} service did not answer in time"
    # A full queue clears as answers finish: tell clients (the OpenAI SDKs do
    # read it) to come back shortly rather than at once.
    headers = {"Retry-After": BUSY_RETRY_AFTER_S} if status == 429 else None
    return ApiError(status, details, error_type, headers)


def not_utf8(what: str, error: UnicodeDecodeError) -> str:
    """The message for text that is not UTF-8: the JSON body here, a form field in forms.py."""
    return f"{what} is not valid UTF-8 ({error.reason} at byte {error.start})"


def http_error_message(error: StarletteHTTPException) -> str:
    """The detail of an HTTPException, naming the cause where FastAPI's does not.

    FastAPI answers a JSON body it fails to parse for a reason other than its
    syntax with "There was an error parsing the body": the two causes the hostile
    input corpus found (tests/hostile/test_corpus.py) are said plainly instead.
    """
    cause = error.__cause__
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply to parse"
    if isinstance(cause, UnicodeDecodeError):
        return not_utf8("the body", cause)
    return str(error.detail)


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(bad_request(f"{where}: {first.get('msg', 'invalid value')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": http_error_message(error), "error_type": "http_error"},
                            status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(ApiError(500, "internal error in the gateway; see its log", "internal"))
