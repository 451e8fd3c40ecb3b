"""Real-time factor of Whisper base on a GPU, fp16, batched (a table; not a test).

The GPU machine here cannot run the production engine (CTranslate2 links
CUDA 12's cuBLAS, which that machine lacks, DESIGN.md §6) and cannot fetch
weights, so this measures the same architecture in PyTorch: transformers'
WhisperForConditionalGeneration built from Whisper base's configuration with
random weights (a random model costs what the real one does). Every clip is a
full 30 s window, as Whisper always encodes; the decoder is forced to emit
`--tokens` tokens per clip (about what 30 s of speech needs: ~2.5 words/s).
Log-mel features are computed on the GPU from raw audio (torch.stft), so the
figure covers audio → text except the decoding of the container.

    python bench/asr_gpu_rtf.py [--batches 1,8,32,64,128] [--tokens 120]

Goal (issue 3): >= 300x real time for base on one H100/H200. Record the card.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

SAMPLE_RATE = 16000
CLIP_S = 30
# openai/whisper-base's dimensions.
BASE = dict(vocab_size=51865, num_mel_bins=80, d_model=512, encoder_layers=6, decoder_layers=6,
            encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
            max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258,
            pad_token_id=50257, eos_token_id=50257, bos_token_id=50257)


def log_mel(audio: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper's features (n_fft 400, hop 160, 80 mels, log10, clamp to max-8, scaled), on the GPU."""
    window = torch.hann_window(400, device=audio.device)
    stft = torch.stft(audio, 400, 160, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.clamp(filters @ power, min=1e-10).log10()
    mel = torch.maximum(mel, mel.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (mel + 4.0) / 4.0


def mel_filters(device: str) -> torch.Tensor:
    # Triangular filters on the mel scale (Slaney-style spacing is close enough for timing).
    freqs = torch.linspace(0, SAMPLE_RATE / 2, 201)
    mels = 2595 * torch.log10(1 + freqs / 700)
    edges = torch.linspace(0, float(mels[-1]), 82)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (mels[None] - lower) / (centre - lower)
    falling = (upper - mels[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).to(device)


@torch.inference_mode()
def run(model, filters, batch: int, tokens: int, repeats: int) -> float:
    audio = torch.randn(batch, SAMPLE_RATE * CLIP_S, device=filters.device) * 0.1
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        synchronize()
        started = time.perf_counter()
        features = log_mel(audio, filters).to(model.dtype)
        model.generate(input_features=features, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        synchronize()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32, tiny batches: checks the code path")
    args = parser.parse_args()
    torch.manual_seed(0)
    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.float16)
    model = WhisperForConditionalGeneration(WhisperConfig(**BASE)).to(device, dtype).eval()
    # Random weights never say "end of text" on their own terms: min_new_tokens keeps lengths fixed.
    model.generation_config.forced_decoder_ids = None
    filters = mel_filters(device)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke)"
    print(f"card: {card}, torch {torch.__version__}; Whisper base shape, {dtype}, "
          f"{args.tokens} tokens per 30 s clip, greedy")
    print("batch  seconds  audio s   x real time  clips/s")
    for batch in (int(b) for b in args.batches.split(",")):
        seconds = run(model, filters, batch, args.tokens, args.repeats)
        print(f"{batch:5d}  {seconds:7.3f}  {batch * CLIP_S:7d}  {batch * CLIP_S / seconds:11.0f}  "
              f"{batch / seconds:7.1f}")
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
