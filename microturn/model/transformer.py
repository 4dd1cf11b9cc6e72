"""The decoder-only transformer: RMSNorm, rotary positions, grouped-query attention, SwiGLU or mixture of experts.

Attention sees a key when it is not in the future and either within ``window`` tokens or among the first ``pinned``
tokens of the session (``visible``). Training passes a whole sequence; streaming passes a chunk plus a bounded
``KVCache``; both build their mask with ``visible`` from absolute positions, so they compute the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate x [B, H, S, hd] by absolute positions pos [B, S]; angles in float64 so an hour of tokens stays exact."""
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=x.device) / hd)
    ang = pos.to(torch.float64)[:, None, :, None] * inv  # [B, 1, S, hd/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, pinned: int) -> torch.Tensor:
    """[B, Sq] x [B, Sk] absolute positions (-1: empty cache slot) -> bool [B, 1, Sq, Sk]."""
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    ok = (k >= 0) & (k <= q) & ((q - k < window) | (k < pinned))
    return ok[:, None]


@dataclass
class KVCache:
    """Bounded per-layer keys/values: ``pinned`` slots for the session's first tokens, then a ring of ``window``."""

    k: list[torch.Tensor]  # per layer [B, H_kv, pinned + window, hd]
    v: list[torch.Tensor]
    pos: torch.Tensor  # [B, pinned + window], absolute position held by each slot, -1 when empty

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, device=None, dtype=torch.float32) -> "KVCache":
        n = cfg.pinned + cfg.window
        shape = (batch, cfg.n_kv_head, n, cfg.head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
                   torch.full((batch, n), -1, dtype=torch.long, device=device))

    def slots(self, pos: torch.Tensor, pinned: int, window: int) -> torch.Tensor:
        """Cache slot of each absolute position [B, S]."""
        return torch.where(pos < pinned, pos, pinned + (pos - pinned) % window)

    def reset(self, rows: torch.Tensor):
        """Forget the sessions in ``rows`` (bool [B])."""
        self.pos[rows] = -1


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, kv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, h * hd, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * kv * hd, bias=False)
        self.o = nn.Linear(h * hd, cfg.d_model, bias=False)

    def forward(self, x, pos, cache: KVCache | None = None, layer: int = 0, write: torch.Tensor | None = None):
        B, S, _ = x.shape
        cfg = self.cfg
        q = self.q(x).view(B, S, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(B, S, 2, cfg.n_kv_head, cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, pos), rotary(k, pos)
        if cache is None:
            keys, vals, k_pos = k, v, pos
        else:
            keys = torch.cat([cache.k[layer], k], dim=2)
            vals = torch.cat([cache.v[layer], v], dim=2)
            k_pos = torch.cat([cache.pos, pos], dim=1)
        if cache is None and S <= cfg.window:  # plain causal attention: the fused kernel, no mask in memory
            y = F.scaled_dot_product_attention(q, keys, vals, is_causal=True, enable_gqa=True)
        else:
            mask = visible(pos, k_pos, cfg.window, cfg.pinned)
            y = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=True)
        if cache is not None:
            self._store(cache, layer, k, v, pos, write)
        return self.o(y.transpose(1, 2).reshape(B, S, -1))

    def _store(self, cache: KVCache, layer: int, k, v, pos, write):
        """Write this chunk's keys/values into the cache rows where ``write`` [B] is true."""
        slot = cache.slots(pos, self.cfg.pinned, self.cfg.window)  # [B, S]
        rows = torch.arange(pos.shape[0], device=pos.device)[:, None].expand_as(slot)
        w = write[:, None].expand_as(slot) if write is not None else torch.ones_like(slot, dtype=torch.bool)
        r, s = rows[w], slot[w]
        kk, vv = k.permute(0, 2, 1, 3)[w], v.permute(0, 2, 1, 3)[w]  # [n, H_kv, hd]
        cache.k[layer][r, :, s] = kk
        cache.v[layer][r, :, s] = vv


class SwiGLU(nn.Module):
    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d, bias=False)

    def forward(self, x):
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(a) * b)


class MoE(nn.Module):
    """Top-k routed SwiGLU experts with the Switch-Transformer load-balancing loss."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.k = cfg.top_k
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.d_ff) for _ in range(cfg.n_experts))
        self.aux_loss = torch.zeros(())

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = self.router(x).softmax(-1)  # [N, E]
        top_p, top_i = probs.topk(self.k, dim=-1)
        top_p = top_p / top_p.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, expert(x[tok]) * top_p[tok, slot, None])
        n_e = len(self.experts)
        frac = F.one_hot(top_i, n_e).sum(1).float().mean(0) / self.k  # share of routed tokens per expert
        self.aux_loss = n_e * (frac * probs.mean(0)).sum()
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n1, self.n2 = RMSNorm(cfg.d_model), RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp = MoE(cfg) if cfg.n_experts else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, pos, cache=None, layer=0, write=None):
        x = x + self.attn(self.n1(x), pos, cache, layer, write)
        return x + self.mlp(self.n2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model)

    def forward(self, x, pos, cache: KVCache | None = None, write: torch.Tensor | None = None):
        for i, b in enumerate(self.blocks):
            x = b(x, pos, cache, i, write)
        if cache is not None:
            w = write if write is not None else torch.ones(pos.shape[0], dtype=torch.bool, device=pos.device)
            slot = cache.slots(pos, self.blocks[0].attn.cfg.pinned, self.blocks[0].attn.cfg.window)
            cache.pos[w.nonzero(as_tuple=True)[0][:, None], slot[w]] = pos[w]
        return self.norm(x)

    def aux_loss(self) -> torch.Tensor:
        losses = [b.mlp.aux_loss for b in self.blocks if isinstance(b.mlp, MoE)]
        return torch.stack(losses).mean() if losses else torch.zeros(())
