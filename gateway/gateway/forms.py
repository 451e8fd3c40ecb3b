"""Multipart forms whose text fields must be valid UTF-8.

Starlette decodes a text field that is not valid UTF-8 as Latin-1 instead of
refusing it (`_user_safe_decode` in starlette/formparsers.py), so `hola \\xff`
arrived as "hola ÿ" and was stored and sent to the model. The decoded text
cannot tell afterwards: "¿Qué" is both the UTF-8 reading of `c2bf 51 75 c3a9`
and the Latin-1 fallback of `bf 51 75 e9`. So the check runs in the parser,
on the bytes, and a route opts in through its router's route class:

    router = APIRouter(route_class=Utf8FormRoute)

Such a field is a 400 whose message names it, worded like the JSON body's case
(errors.not_utf8). A form that declares another charset in its Content-Type
is decoded with that charset, as before.

This leans on Starlette internals (the parser's current part and charset,
Request._get_form), pinned with starlette in gateway/requirements.lock; the
corpus's form-*-utf8 cases (tests/hostile/test_corpus.py) fail if they change.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .errors import not_utf8


class Utf8MultiPartParser(MultiPartParser):
    """Starlette's multipart parser, refusing a text field that is not valid UTF-8."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None and self._charset == "utf-8":
            try:
                part.data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise MultiPartException(not_utf8(f"field '{part.field_name}'", error)) from None
        super().on_part_end()


class Utf8FormRequest(Request):
    """A Request whose multipart form is read by Utf8MultiPartParser; other bodies as Starlette reads them."""

    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type"))
        if self._form is None and content_type == b"multipart/form-data":
            # The same limits and the same error path as Starlette's Request._get_form.
            try:
                async with aclosing(self.stream()) as stream:
                    parser = Utf8MultiPartParser(self.headers, stream, max_files=max_files, max_fields=max_fields,
                                                 max_part_size=max_part_size)
                    self._form = await parser.parse()
            except MultiPartException as error:
                raise HTTPException(status_code=400, detail=error.message) from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class Utf8FormRoute(APIRoute):
    """Route class for routers with form fields: FastAPI's documented way to use another Request class."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(Utf8FormRequest(request.scope, request.receive))

        return handle
