"""Vocoders: log-mel [frames, 80] -> 16 kHz waveform.

A vocoder is anything with ``__call__(logmel) -> np.ndarray`` (and a ``name``); ``get_vocoder(name)`` picks one.
The default is classical: the mel spectrum is mapped back to a linear magnitude spectrum by non-negative least
squares (a few projected-gradient steps from the pseudo-inverse), then Griffin-Lim recovers a phase. A neural
vocoder only needs to implement the same call.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from .dmel import HOP, N_FFT, N_MELS, WIN, mel_filterbank


class Vocoder(Protocol):
    name: str

    def __call__(self, logmel: np.ndarray | torch.Tensor) -> np.ndarray: ...


class GriffinLim:
    """Mel -> magnitude (NNLS) -> Griffin-Lim with momentum ("fast Griffin-Lim", Perraudin et al. 2013)."""

    name = "griffinlim"

    def __init__(self, iters: int = 32, momentum: float = 0.99, nnls_steps: int = 8, seed: int = 0):
        self.iters, self.momentum, self.nnls_steps, self.seed = iters, momentum, nnls_steps, seed
        fb = torch.from_numpy(mel_filterbank()).double()
        self._fb = fb.float()
        self._pinv = torch.linalg.pinv(fb).float()  # [513, 80]
        self._lr = float(1.0 / torch.linalg.matrix_norm(fb, ord=2) ** 2)
        self._window = torch.hann_window(WIN, periodic=True)

    def magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """[..., frames, 80] log10 mel -> [..., 513, frames] non-negative magnitudes whose mel projection matches."""
        mel = (10.0 ** logmel.float()).transpose(-1, -2)  # [..., 80, frames]
        mag = (self._pinv @ mel).clamp_min(0.0)
        for _ in range(self.nnls_steps):  # projected gradient on ||fb @ mag - mel||^2, mag >= 0
            mag = (mag - self._lr * (self._fb.T @ (self._fb @ mag - mel))).clamp_min(0.0)
        return mag

    def __call__(self, logmel) -> np.ndarray:
        """[frames, 80] -> [frames * 200] samples, or a batch [N, frames, 80] -> [N, frames * 200] in one pass."""
        logmel = torch.as_tensor(np.asarray(logmel) if not isinstance(logmel, torch.Tensor) else logmel)
        if logmel.ndim not in (2, 3) or logmel.shape[-1] != N_MELS:
            raise ValueError(f"vocoder input must be log-mel [frames, {N_MELS}] or [batch, frames, {N_MELS}], "
                             f"got {tuple(logmel.shape)}")
        n = logmel.shape[-2]
        if n == 0:
            return np.zeros(logmel.shape[:-2] + (0,), dtype=np.float32)
        mag = self.magnitude(logmel)
        length = n * HOP
        stft = dict(n_fft=N_FFT, hop_length=HOP, win_length=WIN, window=self._window, center=True)
        g = torch.Generator().manual_seed(self.seed)
        angles = torch.exp(2j * torch.pi * torch.rand(mag.shape[-2:], generator=g)).expand_as(mag)
        prev = torch.zeros_like(angles)
        for _ in range(self.iters):
            x = torch.istft(mag * angles, length=length, **stft)
            rebuilt = torch.stft(x, return_complex=True, **stft)[..., :n]
            angles = rebuilt - (self.momentum / (1 + self.momentum)) * prev
            prev = rebuilt
            angles = angles / angles.abs().clamp_min(1e-8)
        x = torch.istft(mag * angles, length=length, **stft)
        # The analysis frames are causal (each ends at (i+1)*HOP), Griffin-Lim's are centred: shift by the offset.
        shift = WIN // 2 - HOP
        if shift > 0:
            x = torch.cat([x[..., shift:], torch.zeros(x.shape[:-1] + (shift,))], -1)
        return x.clamp(-1, 1).numpy().astype(np.float32)


VOCODERS = {"griffinlim": GriffinLim}


def get_vocoder(name: str = "griffinlim", **kw) -> Vocoder:
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; known: {', '.join(sorted(VOCODERS))}")
    return VOCODERS[name](**kw)
