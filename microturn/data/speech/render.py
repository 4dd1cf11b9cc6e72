"""From an engine's output to Speech: word times tightened on the audio, the audio cut to the words and a margin,
resampled to 16 kHz and brought to one loudness. ``synthesize`` is the one entry point."""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

import numpy as np

from microturn.codecs.audio import SAMPLE_RATE, resample
from microturn.data.speech.base import Raw, Token, written_words
from microturn.data.speech.espeak import Espeak
from microturn.data.speech.festival import Festival
from microturn.data.speech.flite import Flite
from microturn.data.speech.neural import Kokoro, Piper
from microturn.data.speech.voice import (AGENT_VOICE, FESTIVAL_VOICES, FLITE_VOICES, MBROLA_VOICES, OPTIONAL_ENGINES,
                                         Voice, VoiceNotInstalled)
from microturn.stream.words import Word

MARGIN = 0.05          # seconds of audio kept before the first word and after the last
TARGET_RMS = 0.1       # RMS of the speech inside word spans (-20 dBFS)


@dataclass
class Speech:
    """Rendered speech: float32 mono ``audio`` at ``sample_rate`` (16 kHz) and one Word per written word."""
    audio: np.ndarray
    words: list[Word]
    voice: Voice
    text: str
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


_FESTIVAL = Festival()  # stateless: one process per call
_ENGINES: dict[str, object] = {"espeak": Espeak(), "flite": Flite(), "festival": _FESTIVAL, "mbrola": _FESTIVAL,
                               "kokoro": Kokoro(), "piper": Piper()}


def _nearest_token(tokens: list[Token], starts: list[int], offset: int) -> int:
    """Index of the written word containing character ``offset``, else the nearest one (ties: the next)."""
    i = bisect.bisect_right(starts, offset) - 1
    if i >= 0 and offset < tokens[i].end:
        return i
    if i < 0:
        return 0
    if i + 1 >= len(tokens):
        return i
    return i if offset - tokens[i].end + 1 < tokens[i + 1].start - offset else i + 1


def _assign(tokens: list[Token], pieces) -> list[list[tuple[float, float]]]:
    """Group the engine's timed pieces by the written word they belong to (by character offset)."""
    starts = [t.start for t in tokens]
    spans: list[list[tuple[float, float]]] = [[] for _ in tokens]
    for offset, start, end in pieces:
        spans[_nearest_token(tokens, starts, offset)].append((start, end))
    return spans


def _loud_frames(audio: np.ndarray, rate: int, floor_db: float = -40.0, hop_s: float = 0.005,
                 win_s: float = 0.010) -> tuple[np.ndarray, int, int]:
    """Which 10 ms frames (5 ms hop) are within ``floor_db`` of the loudest frame; with the hop and window sizes."""
    hop, win = max(1, int(rate * hop_s)), max(1, int(rate * win_s))
    if len(audio) < win:
        return np.zeros(0, bool), hop, win
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(0, len(audio) - win + 1, hop)
    energy = (power[starts + win] - power[starts]) / win
    return energy > energy.max() * 10 ** (floor_db / 10), hop, win


def _tighten(loud: np.ndarray, hop: int, win: int, rate: int, start: float, end: float) -> tuple[float, float]:
    """Cut quiet frames (see _loud_frames) from both edges of [start, end] seconds; unchanged if all are quiet."""
    first, last = int(start * rate) // hop, min(int(end * rate - win) // hop, len(loud) - 1)
    frames = np.nonzero(loud[first:last + 1])[0] if last >= first else np.zeros(0, int)
    if frames.size == 0:
        return start, end
    new_start = max(start, (first + frames[0]) * hop / rate)
    new_end = min(end, ((first + frames[-1]) * hop + win) / rate)
    return float(new_start), float(new_end)


def _word_times(tokens: list[Token], raw: Raw) -> list[tuple[float, float]]:
    """(start, end) in seconds of engine audio for every written word, in order and non-overlapping."""
    groups = _assign(tokens, raw.pieces)
    loud, hop, win = _loud_frames(raw.audio, raw.rate)
    times: list[tuple[float, float] | None] = [
        _tighten(loud, hop, win, raw.rate, min(a for a, _ in g), max(b for _, b in g)) if g else None
        for g in groups]
    out, prev_end = [], 0.0
    for i, t in enumerate(times):
        if t is None:  # not spoken: zero length where it would have been
            nxt = next((u[0] for u in times[i + 1:] if u is not None), prev_end)
            t = (prev_end, prev_end) if i else (nxt, nxt)
        start = max(t[0], prev_end)
        end = max(t[1], start)
        out.append((start, end))
        prev_end = end
    return out


def _fade(audio: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(audio) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def _finish(text: str, voice: Voice, tokens: list[Token], raw: Raw) -> Speech:
    """Trim to the words plus MARGIN, resample to 16 kHz, normalise loudness, shift word times."""
    if raw.audio.size == 0 or not raw.pieces:
        raise ValueError(f"{voice.engine} produced no speech for {text!r}")
    times = _word_times(tokens, raw)
    t0, t1 = min(a for a, _ in times) - MARGIN, max(b for _, b in times) + MARGIN
    i0, i1 = int(round(t0 * raw.rate)), int(round(t1 * raw.rate))
    cut = np.zeros(i1 - i0, np.float32)
    lo, hi = max(i0, 0), min(i1, len(raw.audio))
    cut[lo - i0:hi - i0] = raw.audio[lo:hi]
    audio = resample(_fade(cut, int(0.005 * raw.rate)), raw.rate, SAMPLE_RATE)
    shift = i0 / raw.rate
    words = [Word(t.text, round(float(a - shift), 4), round(float(b - shift), 4)) for t, (a, b) in zip(tokens, times)]
    return Speech(_normalise(audio, words), words, voice, text)


def _normalise(audio: np.ndarray, words: list[Word]) -> np.ndarray:
    mask = np.zeros(len(audio), bool)
    for w in words:
        mask[int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)] = True
    speech = audio[mask] if mask.any() else audio
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if speech.size else 0.0
    if rms <= 0:
        return audio
    gain = min(TARGET_RMS / rms, 0.99 / max(float(np.abs(audio).max()), 1e-9))
    return (audio * gain).astype(np.float32)


def synthesize(text: str, voice: Voice) -> Speech:
    """Render ``text`` with ``voice``: 16 kHz float32 audio and one Word per written word (the package docstring)."""
    if not isinstance(voice, Voice):
        raise ValueError(f"voice must be a Voice, got {type(voice).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if "\0" in text:
        raise ValueError("text contains a NUL character")
    tokens = written_words(text)
    if not tokens:
        raise ValueError(f"text has no words to speak: {text!r}")
    raw = _ENGINES[voice.engine].synth(text, voice)
    return _finish(text, voice, tokens, raw)


def real_time_factors(seconds: float = 1.0) -> dict[str, float]:
    """Seconds of audio produced per second of wall time, per engine voice (whole pipeline: synth, align, resample);
    MBROLA's, Kokoro's and Piper's voices only where they are installed (Debian's non-free, the '.[voices]' extra)."""
    text = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest. " \
           "When I say apple, say yes. What is twenty-one times three?"
    cases = [AGENT_VOICE, Voice("espeak", "en", "m3", rate=1.2)] + [Voice("flite", n) for n in FLITE_VOICES] + \
        [Voice("festival", n) for n in FESTIVAL_VOICES] + [Voice("mbrola", n) for n in MBROLA_VOICES] + \
        [Voice("kokoro", "jf_alpha", "~1"), Voice("piper", "joe")]
    out = {}
    for v in cases:
        try:
            synthesize(text, v)
        except VoiceNotInstalled:
            if v.engine in OPTIONAL_ENGINES:
                continue
            raise
        n, audio_s, t = 0, 0.0, time.perf_counter()
        while time.perf_counter() - t < seconds or n < 3:
            audio_s += synthesize(text, v).duration
            n += 1
        out[v.id] = audio_s / (time.perf_counter() - t)
    return out
