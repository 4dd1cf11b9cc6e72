"""Input embedders: clock, dMel audio, video patches (hMLP), text; and the per-slot embedding of the layout."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codecs import dmel
from ..codecs.patches import to_patches
from ..stream.layout import Layout


class ClockEmbed(nn.Module):
    """Absolute time in seconds -> sinusoids with periods from 0.4 s to ~3 h -> linear."""

    def __init__(self, d: int, n: int = 32):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi / (0.4 * (10800 / 0.4) ** (torch.arange(n) / (n - 1))),
                             persistent=False)
        self.proj = nn.Linear(2 * n, d)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:  # [...] -> [..., d]
        a = seconds.to(torch.float64)[..., None] * self.freqs.to(torch.float64)
        return self.proj(torch.cat([a.sin(), a.cos()], -1).float())


class DMelEmbed(nn.Module):
    """A frame is the sum of one learned vector per (channel, bin) (an EmbeddingBag over its 80 (channel, bin)
    pairs); a token concatenates ``frames_per_token`` frame vectors and projects them to the model width."""

    def __init__(self, d: int, frames_per_token: int):
        super().__init__()
        self.frame = nn.EmbeddingBag(dmel.N_MELS * dmel.N_BINS, d, mode="sum")
        self.token = nn.Linear(frames_per_token * d, d)
        self.register_buffer("offset", torch.arange(dmel.N_MELS) * dmel.N_BINS, persistent=False)

    def forward(self, bins: torch.Tensor) -> torch.Tensor:  # [..., F, 80] uint8 -> [..., d]
        idx = bins.long() + self.offset  # the (channel, bin) pair of each value
        frames = self.frame(idx.reshape(-1, dmel.N_MELS)).view(*bins.shape[:-1], -1)  # [..., F, d]
        return self.token(F.gelu(frames).flatten(-2))


class HMLP(nn.Module):
    """hMLP patch stem (Touvron et al. 2022): 10x10 sub-patches -> 2x2 merge -> 2x2 merge, MLPs in between.
    A patch of P x P pixels is processed as a 4x4 grid of (P/4) x (P/4) sub-patches."""

    def __init__(self, d: int, patch: int, c1: int = 64, c2: int = 128):
        super().__init__()
        if patch % 4:
            raise ValueError(f"hMLP needs a patch size divisible by 4, got {patch}")
        self.patch, self.sub = patch, patch // 4
        self.s1 = nn.Linear(self.sub * self.sub * 3, c1)
        self.s2 = nn.Linear(4 * c1, c2)
        self.s3 = nn.Linear(4 * c2, d)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # [..., P*P*3] in [-1, 1] -> [..., d]
        lead, s = patches.shape[:-1], self.sub
        x = patches.reshape(-1, 4, s, 4, s, 3).permute(0, 1, 3, 2, 4, 5)  # [N, 4, 4, s, s, 3]
        x = F.gelu(self.s1(x.flatten(-3)))  # [N, 4, 4, c1]
        x = x.reshape(-1, 2, 2, 2, 2, x.shape[-1]).permute(0, 1, 3, 2, 4, 5).flatten(-3)  # [N, 2, 2, 4*c1]
        x = F.gelu(self.s2(x))
        x = self.s3(x.flatten(1, 2).flatten(-2))  # [N, 4*c2] -> [N, d]
        return x.view(*lead, -1)


class InputEmbed(nn.Module):
    """Embeds every slot of a micro-turn block; returns [B, T, layout.length, d]."""

    def __init__(self, layout: Layout, d: int, vocab: int):
        super().__init__()
        self.layout = layout
        self.clock = ClockEmbed(d)
        self.audio = DMelEmbed(d, layout.frames_per_token)
        self.video = HMLP(d, layout.patch) if layout.video else None
        self.merge = nn.Linear(layout.n_patches * d, d) if layout.video else None  # a frame's patches -> one token
        self.no_video = nn.Parameter(torch.zeros(d))
        self.text = nn.Embedding(vocab, d)
        self.slot = nn.Parameter(torch.randn(layout.length, d) * 0.02)

    def inputs(self, clock, audio, video, video_on, text_in) -> torch.Tensor:
        """clock [B, T] int; audio [B, T, A, F, 80] uint8; video [B, T, S, S, 3] uint8; video_on [B, T] bool;
        text_in [B, T, K] -> [B, T, n_in, d]."""
        L = self.layout
        parts = [self.clock(clock * L.delta)[:, :, None], self.audio(audio)]
        if L.video:
            v = self.no_video.expand(*video.shape[:2], 1, -1)
            if bool(video_on.any()):  # only frames that are there go through the hMLP
                seen = self.merge(self.video(to_patches(video[video_on], L.patch)).flatten(-2))
                v = v.masked_scatter(video_on[..., None, None], seen.to(v.dtype))
            parts.append(v)
        parts.append(self.text(text_in))
        return torch.cat(parts, dim=2) + self.slot[: L.n_in]

    def outputs(self, out: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Out tokens [B, T, m] fed back as input, in out slots first .. first + m - 1 -> [B, T, m, d]."""
        n_in = self.layout.n_in
        return self.text(out) + self.slot[n_in + first : n_in + first + out.shape[-1]]

    def forward(self, clock, audio, video, video_on, text_in, out) -> torch.Tensor:
        """The whole micro-turn block, [B, T, layout.length, d]."""
        return torch.cat([self.inputs(clock, audio, video, video_on, text_in), self.outputs(out)], dim=2)
