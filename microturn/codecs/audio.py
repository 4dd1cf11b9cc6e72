"""Audio I/O and resampling (soundfile + soxr), with clear errors for bad input.

Everything inside microturn is float32 mono at ``SAMPLE_RATE`` unless a function says otherwise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Raised for audio the project cannot use: empty, NaN, wrong shape, unknown rate, unreadable file."""


def check_rate(rate) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not (1_000 <= int(rate) <= 384_000):
        raise AudioError(f"unsupported sample rate {rate!r}: expected an integer between 1000 and 384000 Hz")
    return int(rate)


def as_mono(x, *, allow_empty: bool = False) -> np.ndarray:
    """Validate a waveform: 1-D float (or [samples, 1]) without NaN/inf. Returns float32 1-D."""
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise AudioError(f"expected mono audio of shape [samples], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise AudioError(f"expected numeric audio, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32, copy=False)
    if a.size == 0 and not allow_empty:
        raise AudioError("audio is empty (0 samples)")
    if not np.all(np.isfinite(a)):
        raise AudioError("audio contains NaN or infinite samples")
    return a


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float audio between any two rates (soxr, high quality)."""
    rate_in, rate_out = check_rate(rate_in), check_rate(rate_out)
    x = as_mono(x, allow_empty=True)
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)


def load_wav(path: str | Path, rate: int = SAMPLE_RATE, channel: int | None = 0) -> np.ndarray:
    """Read an audio file at any rate; returns float32 at ``rate``.

    ``channel``: which channel to keep (default the first); ``None`` keeps all as [samples, channels].
    """
    path = Path(path)
    _check_wav_length(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types; name the file in one clear error
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    if channel is None:
        return np.stack([resample(data[:, c], sr, rate) for c in range(data.shape[1])], axis=1)
    if channel >= data.shape[1]:
        raise AudioError(f"audio file {path} has {data.shape[1]} channel(s); channel {channel} requested")
    return resample(data[:, channel], sr, rate)


def check_audio_file(path: str | Path) -> None:
    """Raise AudioError when ``load_wav`` could not read the file, as far as its header shows (format, channels,
    length), so that a set of many files is checked before any is decoded."""
    path = Path(path)
    _check_wav_length(path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    if info.channels < 1 or info.samplerate < 1:
        raise AudioError(f"audio file {path} has {info.channels} channel(s) at {info.samplerate} Hz")


def _check_wav_length(path: Path) -> None:
    """A WAV file cut short (a copy or download that stopped) reads as the samples that are there, silently; refuse
    one whose ``data`` chunk holds fewer bytes than its header says. A streamed WAV's unknown length (0 or
    0xFFFFFFFF) is not checked; nor are other formats."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            size = path.stat().st_size
            while chunk := f.read(8):
                if len(chunk) < 8:
                    return
                name, n = chunk[:4], int.from_bytes(chunk[4:], "little")
                if name == b"data":
                    have = size - f.tell()
                    if n not in (0, 0xFFFFFFFF) and have < n:
                        raise AudioError(f"audio file {path} is cut short: its header promises {n} bytes of "
                                         f"samples, the file holds {have}")
                    return
                f.seek(n + (n & 1), 1)  # chunks are padded to an even length
    except OSError:
        return  # unreadable: sf.read says so


def save_wav(path: str | Path, x: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write mono [samples] or multi-channel [samples, channels] float audio as 16-bit PCM WAV."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim not in (1, 2):
        raise AudioError(f"expected [samples] or [samples, channels], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise AudioError("refusing to write audio with NaN or infinite samples")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(a, -1.0, 1.0), check_rate(rate), subtype="PCM_16")


def pcm16_to_float(b: bytes) -> np.ndarray:
    if len(b) % 2:
        raise AudioError(f"PCM16 data must have an even number of bytes, got {len(b)}")
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> bytes:
    # the exact inverse of pcm16_to_float (and of how 16-bit WAV files are read)
    return np.clip(np.round(as_mono(x, allow_empty=True) * 32768.0), -32768, 32767).astype("<i2").tobytes()
