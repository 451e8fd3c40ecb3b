"""OpenAI's error shape for the /v1 routes only.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}`; the /api
routes keep the gateway's own `{"error", "error_type"}`. Both come from the same
table (gateway/errors.py): an error is raised as an `ApiError` everywhere, and
the /v1 routes' route class renders it in OpenAI's shape. `code` carries the
gateway's `error_type`, so one error has the same name on both APIs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ApiError, from_grpc, http_error_message
from ..forms import Utf8FormRoute

log = logging.getLogger(__name__)

# HTTP status → OpenAI's error `type`.
_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


class OpenAIApiError(ApiError):
    """An ApiError that also names the request field at fault (OpenAI's `param`)."""

    def __init__(self, status: int, message: str, error_type: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, error_type, headers)
        self.param = param


def invalid(message: str, param: str | None = None, error_type: str = "invalid_request") -> OpenAIApiError:
    return OpenAIApiError(400, message, error_type, param)


def openai_body(error: ApiError) -> dict:
    return {"error": {"message": error.message, "type": openai_type(error.status),
                      "param": getattr(error, "param", None), "code": error.error_type}}


def openai_response(error: ApiError) -> JSONResponse:
    return JSONResponse(openai_body(error), status_code=error.status, headers=error.headers)


def sse_error(error: ApiError) -> str:
    """A failure after the stream started: the OpenAI SDKs raise on a data line with "error"."""
    return f"data: {json.dumps(openai_body(error), ensure_ascii=False)}\n\n"


def from_chat_grpc(error: grpc.aio.AioRpcError) -> ApiError:
    """from_grpc for the chat service; NOT_FOUND is about the model (OpenAI's model_not_found)."""
    failure = from_grpc(error, "chat")
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return OpenAIApiError(failure.status, failure.message, "model_not_found", "model")
    return failure


def _param_of(location: tuple) -> str | None:
    """("body", "messages", 0, "content") → "messages[0].content"."""
    param = ""
    for part in location[1:]:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param or None


def _from_validation(error: RequestValidationError) -> OpenAIApiError:
    first = error.errors()[0] if error.errors() else {}
    if first.get("type") == "json_invalid":
        return invalid(f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}")
    param = _param_of(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid value")
    return invalid(f"{param}: {message}" if param else message, param)


class OpenAIRoute(Utf8FormRoute):
    """Route class of the /v1 routers: every error leaves in OpenAI's shape,
    including FastAPI's own validation errors, which are raised inside the
    route's handler (before the app-wide handlers would see them). Form
    fields must be UTF-8 (forms.py), as on /api."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return openai_response(error)
            except RequestValidationError as error:
                return openai_response(_from_validation(error))
            except StarletteHTTPException as error:
                return openai_response(ApiError(error.status_code, http_error_message(error), "http_error"))
            except Exception:
                log.exception("unhandled error on %s", request.url.path)
                return openai_response(ApiError(500, "internal error in the gateway; see its log", "internal"))

        return handle
