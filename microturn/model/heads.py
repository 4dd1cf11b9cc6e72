"""Output heads: the flow-matching head that generates a micro-turn's mel frames from the model state.

(The text head is tied to the text embedding; the listening head is a linear layer; both live in model.py.)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codecs import dmel

MEL_MEAN, MEL_SCALE = -3.5, 3.5  # log10 mel in [-7, 2] -> roughly [-1, 1.6]


class FlowHead(nn.Module):
    """Rectified-flow (flow matching) over a whole window of mel frames [F, 80], conditioned on a hidden state.

    Training: x_s = (1 - s) * noise + s * target, the network predicts the velocity target - noise.
    Sampling: Euler steps from noise at s = 0 to s = 1.
    """

    def __init__(self, d_model: int, frames: int, width: int = 256, n_blocks: int = 3):
        super().__init__()
        self.frames, self.dim = frames, frames * dmel.N_MELS
        self.inp = nn.Linear(self.dim, width)
        self.cond = nn.Linear(d_model, width)
        self.time = nn.Linear(32, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                                  nn.Linear(2 * width, width)) for _ in range(n_blocks))
        self.out = nn.Linear(width, self.dim)

    def _time(self, s):
        f = torch.exp(torch.arange(16, device=s.device) * (-math.log(1000.0) / 15)) * 1000.0
        a = s[:, None] * f
        return torch.cat([a.sin(), a.cos()], -1)

    def velocity(self, x, s, h):  # x [N, dim], s [N], h [N, d]
        return self._velocity(x, self.cond(h) + self.time(self._time(s)))

    def _velocity(self, x, c):  # c: the condition and time embedding, [N or 1, width]
        z = self.inp(x) + c
        for b in self.blocks:
            z = z + b(z)
        return self.out(z)

    def loss(self, h: torch.Tensor, mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """h [N, d], mel [N, F, 80] log10 -> flow-matching MSE per item [N]."""
        x1 = ((mel - MEL_MEAN) / MEL_SCALE).flatten(1)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        s = torch.rand(x1.shape[0], generator=generator, device=x1.device)
        xs = (1 - s[:, None]) * x0 + s[:, None] * x1
        return F.mse_loss(self.velocity(xs, s, h), x1 - x0, reduction="none").mean(-1)

    @torch.no_grad()
    def sample(self, h: torch.Tensor, steps: int = 4, temperature: float = 1.0,
               generator=None) -> torch.Tensor:
        """h [N, d] -> mel [N, F, 80] (log10, clamped to the dMel range). ``generator``: one, or one per row."""
        if isinstance(generator, list):
            x = torch.stack([torch.randn(self.dim, generator=g, device=h.device) if g is not None
                             else torch.zeros(self.dim, device=h.device) for g in generator])
        else:
            x = torch.randn(h.shape[0], self.dim, generator=generator, device=h.device)
        x = x * temperature
        c = self.cond(h)  # constant over the Euler steps, like each step's time embedding (shared by the rows)
        s = torch.arange(steps, device=h.device, dtype=h.dtype) / steps
        te = self.time(self._time(s))
        for i in range(steps):
            x = x + self._velocity(x, c + te[i]) / steps
        mel = x.view(-1, self.frames, dmel.N_MELS) * MEL_SCALE + MEL_MEAN
        return mel.clamp(dmel.LOG_MIN, dmel.LOG_MAX)
