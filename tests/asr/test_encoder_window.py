"""With ASR_ENCODER_WINDOW_S below 30 the encoder sees only as much of
Whisper's 30 s window as the speech needs (asr-service/asr_service/
encoder_window.py); by default it sees the whole window.

An engine is loaded as the service loads it, from its settings, in the ASR
venv (tests/asr/encoder_windows.py), and the frames of every encoder pass are
counted while it transcribes a ~3 s and a ~14 s Spanish clip: by default both
windows are whole; ASR_ENCODER_WINDOW_S=15 cuts the short clip's window to
15 s and keeps the long one's whole (over 10 s of speech). Live dictation's
interim passes always use 15 s windows; its finals the service's. What this costs and saves in time and words is a
benchmark's job (bench/asr_audio_context.py), not a test's.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from tests.support.spanish_speech import SENTENCES, word_errors
from tests.support import audio_clips as clips
from tests.support.tiny_whisper import ASR_PYTHON, REPO

TIMEOUT = 300
SHORT = SENTENCES[0]
LONG = SENTENCES[2:7]  # five sentences with pauses: 12-20 s


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("encoder-window")
    short = folder / "short.wav"
    short.write_bytes(clips.speak_wav(SHORT))
    parts = []
    for sentence in LONG:
        samples, rate = clips.wav_to_samples(clips.speak_wav(sentence))
        parts += [samples, np.zeros(int(0.4 * rate), np.float32)]
    long = folder / "long.wav"
    long.write_bytes(clips.encode(np.concatenate(parts), rate, "wav"))
    seconds = sum(part.size for part in parts) / rate
    assert 12 < seconds < 20, seconds  # the premise: over 10 s of speech, under 30
    return str(short), str(long)


def encoder_windows(files, **env) -> subprocess.CompletedProcess:
    inherited = {name: value for name, value in os.environ.items() if name != "ASR_ENCODER_WINDOW_S"}
    return subprocess.run(
        [str(ASR_PYTHON), str(REPO / "tests" / "asr" / "encoder_windows.py"), *files],
        env={**inherited, "ASR_DEVICE": "cpu", **env}, cwd=REPO,
        capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def windowed(audio_files) -> dict:
    done = encoder_windows(audio_files, ASR_ENCODER_WINDOW_S="15")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def whole(audio_files) -> dict:
    done = encoder_windows(audio_files)  # the defaults: ASR_ENCODER_WINDOW_S unset
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_with_15_s_steps_a_short_prompt_gets_a_15_s_window_and_a_long_one_the_whole(windowed):
    assert windowed["step"] == 15
    short, long = windowed["runs"]
    assert short["frames"] and set(short["frames"]) == {1500}  # ~3 s of speech + 5 s: one 15 s step
    assert long["frames"] and set(long["frames"]) == {3000}  # 12-20 s + 5 s: Whisper's whole window


def test_by_default_every_window_is_whisper_s_whole_window(whole):
    assert whole["step"] == 30
    assert all(set(run["frames"]) == {3000} for run in whole["runs"]), whole["runs"]


def test_the_shorter_window_hears_as_well_as_the_whole_one(windowed, whole):
    said = [SHORT, " ".join(LONG)]
    for sentence, cut, full in zip(said, windowed["runs"], whole["runs"], strict=True):
        cut_errors, words = word_errors(sentence, cut["text"])
        full_errors, _ = word_errors(sentence, full["text"])
        assert cut_errors <= full_errors + 1, (sentence, cut["text"], full["text"])
        assert cut_errors <= words // 3, (sentence, cut["text"])  # it is still a transcript of the speech


def test_a_window_longer_than_whisper_s_stops_the_service_naming_the_setting(audio_files):
    done = encoder_windows(audio_files[:1], ASR_ENCODER_WINDOW_S="45")
    assert done.returncode != 0
    assert "ASR_ENCODER_WINDOW_S" in done.stderr and "30" in done.stderr


def test_live_dictation_interims_use_a_15_s_window_and_the_final_the_service_s(whole, windowed):
    for found in (whole, windowed):  # whatever the service's window, interims get 15 s
        interim, final = found["dictation"]
        assert interim["finals"] == [False] and set(interim["frames"]) == {1500}, interim
        assert final["finals"] == [True] and final["frames"], final
    assert set(whole["dictation"][1]["frames"]) == {3000}  # the default: the final on the whole window
    assert set(windowed["dictation"][1]["frames"]) == {1500}  # ASR_ENCODER_WINDOW_S=15: the final's too
