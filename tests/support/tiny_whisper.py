"""Builds a small, randomly initialised openai-whisper checkpoint for tests.

No Whisper ``.pt`` checkpoint can be fetched here (DESIGN §4), so the tests
build one from openai-whisper's own ``ModelDimensions`` with the real
multilingual vocabulary and mel size (so the real tokenizer, language tokens
and feature extractor are used) and narrow layers (width 64, 2 layers), and
save it in the format ``whisper.load_model`` reads: ``{"dims": ...,
"model_state_dict": ...}``. Its text is meaningless; what it proves is that
the service loads a checkpoint file and runs the whole decoding path.

Runs in the ASR service's virtualenv (it needs torch and openai-whisper)::

    .venv/asr/bin/python tests/support/tiny_whisper.py OUT.pt

Deterministic: the same command writes the same weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASR_PYTHON = REPO / ".venv" / "asr" / "bin" / "python"
TEXT_TOKENS = 8  # tokens of (meaningless) text per 30 s window


def build(out: Path, seed: int = 0) -> None:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=80,  # the mel bins of every model up to large-v2
        n_audio_ctx=1500,  # fixed by the 30 s window (3000 frames, stride 2)
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=2,
        n_vocab=51865,  # multilingual vocabulary: language detection works
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=2,
    )
    model = Whisper(dims)
    _short_answers(model, TEXT_TOKENS)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, out)


def _short_answers(model, text_tokens: int) -> None:
    """Make the random decoder write ``text_tokens`` tokens, then end the window.

    Left alone, a random decoder rarely picks end-of-text: every 30 s window
    runs to its 224-token limit, scatters random timestamps that make
    openai-whisper re-read the audio in small steps, and one 3 s clip costs
    minutes on a CPU. So the end-of-text embedding and the decoder's position
    embeddings share one direction: positions before ``first_end`` point away
    from it (end-of-text is the least likely token there, so text is written),
    positions after it point along it (end-of-text wins). The rest stays
    random, so which text tokens come out is still arbitrary.
    (``positional_embedding`` is created uninitialised by openai-whisper,
    which always loads it from a checkpoint: it must be set here anyway.)
    """
    import torch

    decoder = model.decoder
    eot = 50257  # <|endoftext|> of the multilingual vocabulary
    width = decoder.token_embedding.weight.shape[1]
    direction = torch.randn(width)
    direction -= direction.mean()  # LayerNorm removes the mean; keep the direction
    direction /= direction.norm()
    # Prompt (<|startoftranscript|><|es|><|transcribe|>), the first timestamp,
    # then the text: end-of-text becomes likely from here on.
    first_end = 4 + text_tokens
    positions = torch.arange(decoder.positional_embedding.shape[0]).unsqueeze(1)
    # Mostly random per position (so the text varies and does not look like
    # the repetition Whisper re-decodes), with a push towards or away from
    # end-of-text: weak before first_end, strong after it.
    # Three times the token embeddings' scale, so the previous token does not
    # dominate the state and pick itself again (tied embeddings make a random
    # decoder repeat one token forever).
    push = torch.where(positions < first_end, -3.0, 12.0)
    with torch.no_grad():
        decoder.positional_embedding.copy_(3.0 * torch.randn_like(decoder.positional_embedding)
                                           + push * direction)
        decoder.token_embedding.weight[eot] = 20.0 * direction


def build_in_asr_venv(out: Path) -> Path:
    """Run ``build`` in the ASR venv (the test venv has no torch); return ``out``."""
    subprocess.run([str(ASR_PYTHON), __file__, str(out)], check=True, timeout=300,
                   capture_output=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build(args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
