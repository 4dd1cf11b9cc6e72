"""dMel: discretised log-mel spectrogram (Bai et al. 2024), the model's audio input and output representation.

Recipe (shared/reference.md): 16 kHz; |STFT| with n_fft 1024, a 50 ms Hann window (800 samples) and a 12.5 ms hop
(200 samples, 80 frames/s); 80 mel channels over 80-7600 Hz (HTK mel scale, unnormalised triangles); log10 with a
floor of 1e-10; clamp to [-7, 2]; 16 uniform levels ``linspace(-7, 2, 16)``, each value rounded to the nearest.

Framing is *causal*: frame i sees the 800 samples that end at sample (i + 1) * 200, so N samples give exactly N // 200
frames, a 200 ms micro-turn gives 16 frames, and streaming encoding (``DMelStream``) equals offline encoding bit for
bit. (A centred STFT would need 12.5 ms of future audio at every chunk edge.)
"""
from __future__ import annotations

import numpy as np
import torch

from .audio import SAMPLE_RATE, as_mono

N_FFT = 1024
WIN = 800
HOP = 200
N_MELS = 80
F_MIN, F_MAX = 80.0, 7600.0
LOG_MIN, LOG_MAX = -7.0, 2.0
N_BINS = 16
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 80
LEVELS = np.linspace(LOG_MIN, LOG_MAX, N_BINS).astype(np.float32)
STEP = (LOG_MAX - LOG_MIN) / (N_BINS - 1)  # 0.6: decode(encode(v)) is within STEP / 2 of clamp(v)
# Zeros padded so that torch.stft(center=False) frames end where the causal recipe says (see module docstring).
_PAD_LEFT = (N_FFT - WIN) // 2 + WIN - HOP  # 712
_PAD_RIGHT = (N_FFT - WIN) // 2  # 112


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


# the channels on the mel scale: channel k's triangle rises from _MEL_EDGES[k] to its centre _MEL_EDGES[k + 1] and
# falls to _MEL_EDGES[k + 2]
_MEL_EDGES = np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2)
_MEL_CENTRES = _MEL_EDGES[1:-1]
CHANNEL_HZ = mel_to_hz(_MEL_CENTRES)  # [N_MELS]: each channel's centre frequency


def mel_filterbank() -> np.ndarray:
    """[N_MELS, N_FFT // 2 + 1] triangular HTK-mel filters."""
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(_MEL_EDGES)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


_FB = torch.from_numpy(mel_filterbank())
_WINDOW = torch.hann_window(WIN, periodic=True)


def log_mel(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Waveform (16 kHz, float) -> clamped log10 mel [frames, 80], frames = len // 200 (causal framing)."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(as_mono(x))
    x = torch.nn.functional.pad(x.float()[None], (_PAD_LEFT, _PAD_RIGHT))[0]
    n = (x.shape[0] - _PAD_LEFT - _PAD_RIGHT) // HOP
    if n == 0:
        return torch.zeros(0, N_MELS)
    x = x[: (n - 1) * HOP + N_FFT]
    spec = torch.stft(x, N_FFT, HOP, WIN, _WINDOW, center=False, return_complex=True).abs()  # [513, n]
    mel = (_FB @ spec).T  # [n, 80]
    return torch.log10(mel.clamp_min(1e-10)).clamp(LOG_MIN, LOG_MAX)


def quantize(logmel: torch.Tensor) -> torch.Tensor:
    """Clamped log-mel -> bins (uint8 in [0, 15])."""
    return torch.round((logmel.clamp(LOG_MIN, LOG_MAX) - LOG_MIN) / STEP).to(torch.uint8)


def dequantize(bins: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Bins [..., frames, 80] -> log-mel values (the level each bin stands for)."""
    b = bins if isinstance(bins, torch.Tensor) else torch.from_numpy(np.array(bins))
    if b.ndim < 2 or b.shape[-1] != N_MELS:
        raise ValueError(f"dMel bins must have shape [..., frames, {N_MELS}], got {tuple(b.shape)}")
    lo, hi = (int(x) for x in torch.aminmax(b)) if b.numel() else (0, 0)
    if hi >= N_BINS or lo < 0:
        raise ValueError(f"dMel bins must lie in [0, {N_BINS - 1}], got a {hi if hi >= N_BINS else lo}")
    return LOG_MIN + b.float() * STEP


def warp_channels(x: np.ndarray, alpha: float) -> np.ndarray:
    """Scale the frequency axis of dMel bins [..., 80] by ``alpha`` (vocal tract length perturbation, Jaitly & Hinton
    2013): channel j takes the level at frequency f_j / alpha (linear between channels, the edge channels beyond the
    range), so alpha > 1 moves formants and harmonics up, as a shorter vocal tract would. Silence stays silence.
    Training alters its input with it (``train.data.augment``); decoding may hear through several
    (``Sampling.warps``)."""
    src = hz_to_mel(mel_to_hz(_MEL_CENTRES) / alpha)
    pos = np.clip((src - _MEL_CENTRES[0]) / (_MEL_CENTRES[1] - _MEL_CENTRES[0]), 0, N_MELS - 1)
    lo = np.floor(pos).astype(int)
    hi, frac = np.minimum(lo + 1, N_MELS - 1), (pos - lo).astype(np.float32)
    return np.rint(x[..., lo] * (1 - frac) + x[..., hi] * frac).astype(x.dtype)


def encode(x: np.ndarray | torch.Tensor, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Waveform at any rate -> dMel bins, uint8 [frames, 80]."""
    if rate != SAMPLE_RATE:
        from .audio import resample

        x = resample(np.asarray(x), rate, SAMPLE_RATE)
    return quantize(log_mel(x)).numpy()


class DMelStream:
    """Streaming dMel encoder: push audio of any chunk size, get the frames completed so far.

    Holds the last 600 samples of history, so its output equals ``encode`` of the whole signal.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self._buf = np.zeros(WIN - HOP, dtype=np.float32)  # the causal left context (zeros before time 0)

    def push(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._buf, as_mono(x, allow_empty=True)])
        n = (buf.shape[0] - (WIN - HOP)) // HOP
        if n == 0:
            self._buf = buf
            return np.zeros((0, N_MELS), dtype=np.uint8)
        used = buf[: (WIN - HOP) + n * HOP]
        frames = encode(used)[-n:]  # zeros in the left pad of ``encode`` only touch frames we drop
        self._buf = buf[n * HOP :]
        return frames
