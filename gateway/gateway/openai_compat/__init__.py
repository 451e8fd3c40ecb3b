"""OpenAI-compatible `/v1` API, so existing SDKs and UIs work against the stack.

One module per concern: schemas (request bodies), convert (chat_pb2 ⇄ OpenAI
objects), images (data: URLs), transcripts (response formats), errors
(OpenAI's error shape), and one router per resource: chat, audio, models.
"""

from . import audio, chat, models

routers = (chat.router, audio.router, models.router)
