"""The seed's way to transcribe, kept only as a benchmark baseline.

The seed ran `conda run python transcribe.py` once per request: a fresh Python
process that imports the library, loads Whisper base, transcribes the clip the
server had written to one shared temp file, prints the text and exits. This
script does the same with the same model (the packaged Whisper base) and the
same decoding settings as asr-service (int8 on CPU, beam 5, Spanish), so that
what `bench/asr_latency.py` compares is the per-request process and model load,
not different decoding.

    .venv/asr/bin/python bench/seed_transcribe.py AUDIO_FILE [--model FOLDER] [--language es]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / ".cache" / "models" / "faster-whisper-base"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="audio file to transcribe")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="CTranslate2 Whisper folder or name")
    parser.add_argument("--language", default="es")
    args = parser.parse_args(argv)

    from faster_whisper import WhisperModel  # imported per request, as the seed did

    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)
    segments, _ = model.transcribe(args.audio, language=args.language, beam_size=5, vad_filter=True)
    print(" ".join(segment.text.strip() for segment in segments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
