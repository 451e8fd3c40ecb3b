"""Speech to text: the seed's `POST /api/transcribe` (multipart `audio`)."""

from __future__ import annotations

import grpc
from chatbot_protos.asr.v1 import asr_pb2
from fastapi import APIRouter, File, Form, Request, UploadFile

from ..clients import ClientsDep, SettingsDep, request_metadata
from ..errors import bad_request, from_grpc
from ..forms import Utf8FormRoute
from ..quotas import ChargedPrincipalDep
from ..uploads import is_present, read_upload

router = APIRouter(tags=["speech"], route_class=Utf8FormRoute)  # form fields must be UTF-8

# The form's language: absent = the service default (Spanish); "auto" = detect.
_DETECT = "auto"


def options_for(language: str | None) -> asr_pb2.TranscriptionOptions:
    options = asr_pb2.TranscriptionOptions(task=asr_pb2.TASK_TRANSCRIBE)
    if language is not None and language.strip():
        options.language = "" if language.strip().lower() == _DETECT else language.strip().lower()
    return options


@router.post("/api/transcribe")
async def transcribe(request: Request, clients: ClientsDep, settings: SettingsDep, _: ChargedPrincipalDep,
                     audio: UploadFile | None = File(None), language: str | None = Form(None)) -> dict:
    """Transcribes a recorded clip (webm/opus, ogg/opus, mp4/aac, wav, mp3, flac)."""
    if not is_present(audio):
        raise bad_request("audio is required: send the recording as the multipart file field 'audio'")
    data, mime = await read_upload(audio, "audio", "audio")
    try:
        reply = await clients.asr.Transcribe(
            asr_pb2.TranscribeRequest(audio=data, mime_type=mime, options=options_for(language)),
            timeout=settings.transcribe_timeout_s, metadata=request_metadata(request))
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "speech recognition") from None
    return {
        "transcription": reply.text,
        "language": reply.language,
        "language_probability": round(reply.language_probability, 4),
        "duration": round(reply.duration_seconds, 3),
        "segments": [{"start": round(s.start_seconds, 3), "end": round(s.end_seconds, 3), "text": s.text}
                     for s in reply.segments],
    }
