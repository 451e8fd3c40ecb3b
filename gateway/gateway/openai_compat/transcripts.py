"""A TranscribeResponse written in OpenAI's response formats: json, text,
verbose_json, srt and vtt."""

from __future__ import annotations

import math
import zlib

from chatbot_protos.asr.v1 import asr_pb2
from fastapi.responses import JSONResponse, PlainTextResponse, Response

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def render(reply: asr_pb2.TranscribeResponse, response_format: str, words: bool) -> Response:
    text = reply.text.strip()
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format == "srt":
        return PlainTextResponse(srt(reply.segments))
    if response_format == "vtt":
        return PlainTextResponse(vtt(reply.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(reply, words))
    return JSONResponse({"text": text, "usage": _usage(reply)})


def _usage(reply: asr_pb2.TranscribeResponse) -> dict:
    # OpenAI bills whisper by whole seconds of audio and reports them so.
    return {"type": "duration", "seconds": math.ceil(reply.duration_seconds)}


def verbose_json(reply: asr_pb2.TranscribeResponse, words: bool) -> dict:
    body = {"task": "transcribe", "language": reply.language, "duration": round(reply.duration_seconds, 3),
            "text": reply.text.strip(), "segments": [_segment(i, s) for i, s in enumerate(reply.segments)],
            "usage": _usage(reply)}
    if words:
        body["words"] = [{"word": w.text.strip(), "start": round(w.start_seconds, 3), "end": round(w.end_seconds, 3)}
                         for s in reply.segments for w in s.words]
    return body


def _segment(index: int, segment: asr_pb2.Segment) -> dict:
    return {"id": index,
            # Whisper's seek: the window's offset in 10 ms frames.
            "seek": int(segment.start_seconds * 100),
            "start": round(segment.start_seconds, 3), "end": round(segment.end_seconds, 3),
            "text": segment.text.strip(),
            # The service does not return token ids.
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": round(segment.avg_logprob, 4),
            "compression_ratio": round(_compression_ratio(segment.text), 4),
            "no_speech_prob": round(segment.no_speech_probability, 4)}


def _compression_ratio(text: str) -> float:
    """Whisper's repetition signal: text bytes over their zlib-compressed size."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments) -> str:
    cues = [f"{n}\n{_timestamp(s.start_seconds, ',')} --> {_timestamp(s.end_seconds, ',')}\n{s.text.strip()}\n"
            for n, s in enumerate(segments, start=1)]
    return "\n".join(cues)


def vtt(segments) -> str:
    cues = [f"{_timestamp(s.start_seconds, '.')} --> {_timestamp(s.end_seconds, '.')}\n{s.text.strip()}\n"
            for s in segments]
    return "\n".join(["WEBVTT\n", *cues])
