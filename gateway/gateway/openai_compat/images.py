"""Images of OpenAI `image_url` parts: inline `data:` URLs only.

Remote URLs (http, https, file…) are refused on purpose: fetching them would let
any caller make the server request addresses of its choosing, including ones
only reachable from inside the network (SSRF). Clients inline the image
instead, as the OpenAI SDKs do for local files. The chat service checks the
decoded bytes (format, size); this module only unwraps the URL.
"""

from __future__ import annotations

import base64
import binascii
import re

from chatbot_protos.chat.v1 import chat_pb2

from .errors import OpenAIApiError, invalid

# data:[<media type>][;param=value]*;base64,<payload>
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)$", re.DOTALL | re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def image_from_url(url: str, param: str) -> chat_pb2.Image:
    """chat_pb2.Image from a data: URL; a clear 400 naming `param` for anything else."""
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme != "data":
        shown = f"{scheme}: URLs" if scheme else "URLs without a scheme"
        raise OpenAIApiError(
            400, f"{param}: {shown} are not fetched by this server (it does no server-side fetching); "
                 "send the image inline as a data URL, for example data:image/png;base64,<base64 bytes>",
            "unsupported_image_url", param)
    match = _DATA_URL.match(url.strip())
    if not match:
        raise invalid(f"{param}: malformed data URL; expected data:image/<type>;base64,<base64 bytes>", param)
    mime = match["mime"].strip().lower()
    if not mime.startswith("image/"):
        raise OpenAIApiError(415, f"{param}: the data URL holds {mime or 'no media type'}; send an image "
                                  "(data:image/png;base64,…)", "unsupported_media_type", param)
    if "base64" not in (p.strip().lower() for p in match["params"].split(";")):
        raise invalid(f"{param}: the data URL must be base64-encoded (data:{mime};base64,…)", param)
    data = _decode_base64(_WHITESPACE.sub("", match["payload"]))
    if data is None:
        raise invalid(f"{param}: the data URL's payload is not valid base64", param)
    if not data:
        raise invalid(f"{param}: the image is empty", param)
    return chat_pb2.Image(data=data, mime_type=mime)


_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _decode_base64(payload: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None when it is neither."""
    padded = payload + "=" * (-len(payload) % 4)
    try:
        if _STANDARD.fullmatch(padded):
            return base64.b64decode(padded, validate=True)
        if _URL_SAFE.fullmatch(padded):
            return base64.urlsafe_b64decode(padded)
    except binascii.Error:
        pass
    return None
