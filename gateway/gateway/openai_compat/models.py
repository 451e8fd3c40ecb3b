"""`GET /v1/models` and `GET /v1/models/{id}`: the chat service's models and
adapters (its gRPC `ListModels`) plus the ASR service's speech model (its own
`ListModels`), in OpenAI's list shape.

Besides OpenAI's fields (`id`, `object`, `created`, `owned_by`) each entry says
what it is for (`task`: chat or transcription), and chat models carry the
service's facts: backend, vision, images per message, context length, and for
adapters their base model (`parent`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import PurePath

import grpc
from chatbot_protos.asr.v1 import asr_pb2
from chatbot_protos.chat.v1 import chat_pb2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..auth import current_principal
from ..clients import ModelClients, request_metadata
from ..config import Settings
from ..errors import from_grpc
from .errors import OpenAIApiError, OpenAIRoute

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute,
                   dependencies=[Depends(current_principal)])

OWNER = "chatbot"
# Listing is cheap; a service that takes longer than this is not answering.
LIST_TIMEOUT_S = 10
# OpenAI's `created`: the models are as old as this gateway process knows.
_STARTED = int(time.time())


def transcription_model_id(model: str) -> str:
    """`whisper-base` for the model `base`; a local folder or file is named by its last part."""
    name = PurePath(model.rstrip("/")).stem or model
    return name if "whisper" in name.lower() else f"whisper-{name}"


def _chat_entry(info: chat_pb2.ModelInfo) -> dict:
    return {"id": info.name, "object": "model", "created": _STARTED, "owned_by": OWNER, "task": "chat",
            "backend": info.backend, "vision": info.vision, "max_images_per_message": info.max_images_per_message,
            "context_length": info.context_length or None, "parent": info.base_model or None}


def _transcription_entry(info: asr_pb2.ModelInfo) -> dict:
    return {"id": transcription_model_id(info.name), "object": "model", "created": _STARTED, "owned_by": OWNER,
            "task": "transcription", "engine": info.engine or None, "device": info.device or None,
            "compute_type": info.compute_type or None, "loaded": info.loaded}


async def _speech_models(request: Request, clients: ModelClients, settings: Settings) -> list[dict]:
    """What the ASR service says it runs; when it cannot be asked, the configured
    model (ASR_MODEL) marked not loaded: the list of chat models stays usable."""
    try:
        reply = await clients.asr.ListModels(asr_pb2.ListModelsRequest(), timeout=LIST_TIMEOUT_S,
                                             metadata=request_metadata(request))
        return [_transcription_entry(m) for m in reply.models]
    except grpc.aio.AioRpcError:
        return [_transcription_entry(asr_pb2.ModelInfo(name=settings.asr_model, loaded=False))]


async def _chat_models(request: Request, clients: ModelClients) -> list[dict]:
    try:
        reply = await clients.chat.ListModels(chat_pb2.ListModelsRequest(), timeout=LIST_TIMEOUT_S,
                                              metadata=request_metadata(request))
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "chat") from None
    return [_chat_entry(m) for m in reply.models]


async def _models(request: Request) -> list[dict]:
    """Both services asked at once: the list costs one round trip, not two."""
    clients, settings = request.app.state.clients, request.app.state.settings
    speech = asyncio.ensure_future(_speech_models(request, clients, settings))
    try:
        chat = await _chat_models(request, clients)
    except BaseException:
        speech.cancel()
        raise
    return [*chat, *await speech]


@router.get("/models", response_model=None)
async def list_models(request: Request) -> JSONResponse:
    """Every model this server answers with."""
    # A JSONResponse of plain values: FastAPI's response encoding walks the
    # whole list for nothing (~0.1 ms of this hot, cheap route).
    return JSONResponse({"object": "list", "data": await _models(request)})


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict:
    """One model by id (ids may contain slashes, as Hugging Face ids do)."""
    for entry in await _models(request):
        if entry["id"] == model:
            return entry
    raise OpenAIApiError(404, f"model {model!r} is not served here", "model_not_found", "model")
