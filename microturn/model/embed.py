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


class FrameConv(nn.Module):
    """Causal convolutions over the stream of 12.5 ms frame vectors, kernel 3, dilations 1, 2, 4, ..., each a
    residual branch: a frame sees ``context`` frames before it, across token and micro-turn boundaries, so the
    sounds a word is made of are put together before the transformer (which sees two tokens per micro-turn among
    the text and video). Valid convolutions: ``context`` more frames in than out. The branches start at zero, so a
    model given them, or given more of them (``microturn train --audio-conv``), starts as it was."""

    def __init__(self, d: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 3, dilation=2**i) for i in range(layers))
        for c in self.convs:
            nn.init.zeros_(c.weight)
            nn.init.zeros_(c.bias)
        self.context = sum(2 * c.dilation[0] for c in self.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, context + n, d] -> [N, n, d]
        y = x.transpose(1, 2)
        for conv in self.convs:
            z = conv(F.gelu(y))
            y = y[..., -z.shape[-1] :] + z
        return y.transpose(1, 2)


class DMelEmbed(nn.Module):
    """A frame is the sum of one learned vector per (channel, bin) (an EmbeddingBag over its 80 (channel, bin)
    pairs); with ``conv`` layers the frame vectors then go through ``FrameConv``; a token concatenates
    ``frames_per_token`` frame vectors and projects them to the model width."""

    def __init__(self, d: int, frames_per_token: int, conv: int = 0):
        super().__init__()
        self.frame = nn.EmbeddingBag(dmel.N_MELS * dmel.N_BINS, d, mode="sum")
        self.conv = FrameConv(d, conv) if conv else None
        self.token = nn.Linear(frames_per_token * d, d)
        self.register_buffer("offset", torch.arange(dmel.N_MELS) * dmel.N_BINS, persistent=False)

    @property
    def context(self) -> int:
        """Frames of the past each token's frames need (the convolutions' reach): 0 without them."""
        return self.conv.context if self.conv is not None else 0

    def forward(self, bins: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """bins [B, T, A, F, 80] uint8 (T micro-turns of A tokens of F frames, in time order) and the ``context``
        frames before them, past [B, context, 80] (the session's start: zeros) -> [B, T, A, d]."""
        idx = bins.long() + self.offset  # the (channel, bin) pair of each value
        frames = self.frame(idx.reshape(-1, dmel.N_MELS)).view(*bins.shape[:-1], -1)  # [B, T, A, F, d]
        if self.conv is not None:
            B, d = bins.shape[0], frames.shape[-1]
            if past is None:
                past = bins.new_zeros(B, self.context, dmel.N_MELS)
            before = self.frame((past.long() + self.offset).reshape(-1, dmel.N_MELS)).view(B, -1, d)
            frames = self.conv(torch.cat([before, frames.reshape(B, -1, d)], 1)).view_as(frames)
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
        n = lead.numel()  # (sizes given in full: N may be 0, in training, see InputEmbed.inputs)
        x = patches.reshape(n, 4, s, 4, s, 3).permute(0, 1, 3, 2, 4, 5)  # [N, 4, 4, s, s, 3]
        x = F.gelu(self.s1(x.flatten(-3)))  # [N, 4, 4, c1]
        x = x.reshape(n, 2, 2, 2, 2, x.shape[-1]).permute(0, 1, 3, 2, 4, 5).flatten(-3)  # [N, 2, 2, 4*c1]
        x = F.gelu(self.s2(x))
        x = self.s3(x.flatten(1, 2).flatten(-2))  # [N, 4*c2] -> [N, d]
        return x.view(*lead, x.shape[-1])


class InputEmbed(nn.Module):
    """Embeds every slot of a micro-turn block; returns [B, T, layout.length, d].

    With ``hear_back`` each audio token also reads a word token, ``heard`` [B, T, A]: the word the model's listening
    head heard at the same audio token of the micro-turn before (``<sil>`` for none), embedded by the text table
    and mapped by ``heard`` (a linear map that starts at zero, so a model given it starts as it was). A word heard
    is then a token like a typed one, which a delegation, a translation or a cue's check can copy or compare, not a
    sound to be read again from the audio tokens' hidden states. The word's unit embedding is mapped and scaled by
    the audio token's own norm: audio embeddings are about 75 times the norm of text ones (measured: 203 against
    2.7), so a word added at the text table's scale would be a few per cent of the token, and a map from zero
    would need thousands of steps to be heard over the audio (runs/s44-s46, docs/training.md)."""

    def __init__(self, layout: Layout, d: int, vocab: int, audio_conv: int = 0, hear_back: bool = False):
        super().__init__()
        self.layout = layout
        self.clock = ClockEmbed(d)
        self.audio = DMelEmbed(d, layout.frames_per_token, audio_conv)
        self.video = HMLP(d, layout.patch) if layout.video else None
        self.merge = nn.Linear(layout.n_patches * d, d) if layout.video else None  # a frame's patches -> one token
        self.no_video = nn.Parameter(torch.zeros(d))
        self.text = nn.Embedding(vocab, d)
        self.slot = nn.Parameter(torch.randn(layout.length, d) * 0.02)
        self.heard = nn.Linear(d, d, bias=False) if hear_back else None

    def inputs(self, clock, audio, video, video_on, text_in, audio_past=None, heard=None) -> torch.Tensor:
        """clock [B, T] int; audio [B, T, A, F, 80] uint8; video [B, T, S, S, 3] uint8; video_on [B, T] bool;
        text_in [B, T, K]; audio_past: the audio frames before these (``DMelEmbed``); heard [B, T, A]: the words
        heard back (needed with ``hear_back``, else ignored) -> [B, T, n_in, d]."""
        L = self.layout
        a = self.audio(audio, audio_past)
        if self.heard is not None:
            if heard is None:
                raise ValueError("a model with hear_back needs the words heard back (heard [B, T, n_audio])")
            a = a + self.heard(F.normalize(self.text(heard), dim=-1)) * a.norm(dim=-1, keepdim=True)
        parts = [self.clock(clock * L.delta)[:, :, None], a]
        if L.video:
            v = self.no_video.expand(*video.shape[:2], 1, -1)
            # only frames that are there go through the hMLP; in training it runs even on none, so that its weights
            # always get a gradient (zero): a sharded (FSDP) run reduces the same gradients on every rank
            if self.training or bool(video_on.any()):
                seen = self.merge(self.video(to_patches(video[video_on], L.patch)).flatten(-2))
                v = v.masked_scatter(video_on[..., None, None], seen.to(v.dtype))
            parts.append(v)
        parts.append(self.text(text_in))
        return torch.cat(parts, dim=2) + self.slot[: L.n_in]

    def outputs(self, out: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Out tokens [B, T, m] fed back as input, in out slots first .. first + m - 1 -> [B, T, m, d]."""
        n_in = self.layout.n_in
        return self.text(out) + self.slot[n_in + first : n_in + first + out.shape[-1]]

    def forward(self, clock, audio, video, video_on, text_in, out, heard=None) -> torch.Tensor:
        """The whole micro-turn block, [B, T, layout.length, d]."""
        return torch.cat([self.inputs(clock, audio, video, video_on, text_in, heard=heard), self.outputs(out)], 2)
