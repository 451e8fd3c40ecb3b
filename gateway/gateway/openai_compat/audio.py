"""`POST /v1/audio/transcriptions`: OpenAI's speech-to-text API over the ASR's gRPC `Transcribe`."""

from __future__ import annotations

import grpc
from chatbot_protos.asr.v1 import asr_pb2
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from ..auth import current_principal
from ..clients import ClientsDep, SettingsDep, request_metadata
from ..errors import from_grpc
from ..quotas import ChargedPrincipalDep
from ..routes.transcribe import options_for
from ..uploads import is_present, read_upload
from .errors import OpenAIRoute, invalid
from .transcripts import FORMATS, render

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute,
                   dependencies=[Depends(current_principal)])


@router.post("/audio/transcriptions")
async def create_transcription(
    request: Request, clients: ClientsDep, settings: SettingsDep, _: ChargedPrincipalDep,
    file: UploadFile | None = File(None, description="the recording (webm, ogg, mp4, wav, mp3, flac…)"),
    model: str | None = Form(None, description="any name (whisper-1…): the ASR service transcribes with "
                                               "the model it has loaded"),
    language: str | None = Form(None, description="ISO 639-1 code; absent = the service default "
                                                  "(ASR_LANGUAGE), 'auto' = detect"),
    prompt: str | None = Form(None, description="text that primes the decoder (names, spelling, style)"),
    response_format: str = Form("json", description="json, text, verbose_json, srt or vtt"),
    temperature: float | None = Form(None, ge=0, le=1, description="accepted; decoding is beam search"),
    timestamp_granularities: list[str] | None = Form(None, alias="timestamp_granularities[]",
                                                     description="segment and/or word (verbose_json only)"),
):
    """Transcribes a clip; the answer's shape follows `response_format`."""
    if not is_present(file):
        raise invalid("file is required: send the recording as the multipart file field 'file'", "file")
    response_format = response_format.strip().lower()
    if response_format not in FORMATS:
        raise invalid(f"response_format: {response_format!r} is not supported; use one of {', '.join(FORMATS)}",
                      "response_format")
    granularities = {g.strip().lower() for g in timestamp_granularities or ()}
    if granularities - {"segment", "word"}:
        raise invalid("timestamp_granularities[]: use 'segment' and/or 'word'", "timestamp_granularities")
    if granularities and response_format != "verbose_json":
        raise invalid("timestamp_granularities[] needs response_format=verbose_json", "timestamp_granularities")
    data, mime = await read_upload(file, "file", "audio")
    options = options_for(language)
    options.initial_prompt = prompt or ""
    options.word_timestamps = "word" in granularities
    try:
        reply = await clients.asr.Transcribe(asr_pb2.TranscribeRequest(audio=data, mime_type=mime, options=options),
                                             timeout=settings.transcribe_timeout_s, metadata=request_metadata(request))
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "speech recognition") from None
    return render(reply, response_format, words="word" in granularities)
