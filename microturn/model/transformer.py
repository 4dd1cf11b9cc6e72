"""The decoder-only transformer: RMSNorm, rotary positions, grouped-query attention, SwiGLU or mixture of experts.

Attention sees a key when it is not in the future and either within ``window`` tokens or among the first ``pinned``
tokens of the session (``visible``). Training passes a whole sequence; streaming passes a chunk plus a bounded
``KVCache``; both build their mask with ``visible`` from absolute positions, so they compute the same thing
(training on sequences no longer than the window uses the fused causal kernel, which is the same mask).
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


def rope(pos: torch.Tensor, hd: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, S, hd/2] for absolute positions pos [B, S]; angles in float64 so an hour stays exact."""
    inv = base ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=pos.device) / hd)
    ang = pos.to(torch.float64)[:, None, :, None] * inv
    return ang.cos().float(), ang.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, pinned: int) -> torch.Tensor:
    """[B, Sq] x [B, Sk] absolute positions (-1: empty cache slot) -> bool [B, 1, Sq, Sk]."""
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    ok = (k >= 0) & (k <= q) & ((q - k < window) | (k < pinned))
    return ok[:, None]


@dataclass
class KVCache:
    """Bounded per-layer keys/values: ``pinned`` slots for the session's first tokens, then a ring.

    The ring holds ``window + slack`` positions, ``slack`` being the longest chunk a step feeds at once: a chunk is
    written before it is attended to, and what it overwrites is then already out of every query's window.
    """

    k: list[torch.Tensor]  # per layer [B, H_kv, pinned + window + slack, hd]
    v: list[torch.Tensor]
    pos: torch.Tensor  # [B, slots], absolute position held by each slot, -1 when empty
    pinned: int
    ring: int

    @staticmethod
    def size(cfg: ModelConfig) -> int:
        """Slots per session: the pinned prefix, then a ring of the window plus one micro-turn of slack."""
        return cfg.pinned + cfg.window + cfg.layout.length

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, device=None, dtype=torch.float32) -> "KVCache":
        shape = (batch, cfg.n_kv_head, cls.size(cfg), cfg.head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)],
                   torch.full((batch, cls.size(cfg)), -1, dtype=torch.long, device=device), cfg.pinned,
                   cls.size(cfg) - cfg.pinned)

    def slots(self, pos: torch.Tensor) -> torch.Tensor:
        """Cache slot of each absolute position [B, S]."""
        return torch.where(pos < self.pinned, pos, self.pinned + (pos - self.pinned) % self.ring)

    def reset(self, rows: torch.Tensor):
        """Forget the sessions in ``rows`` (bool [B])."""
        self.pos[rows] = -1


@dataclass
class Context:
    """Computed once per forward call and shared by every layer."""

    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor | None  # None: plain causal; bool [B, 1, S, Sk]; with a cache, additive (0 / -inf) and
    # folded for grouped queries [n, 1, (n_head / n_kv_head) * S, used], built once for every layer
    cache: KVCache | None = None
    rows: torch.Tensor | None = None  # [n] the cache rows (sessions) this chunk belongs to
    slot: torch.Tensor | None = None  # [n, S] its slots
    row_list: list[int] | None = None  # a subset of the cache rows, as ints (per-row views); None: every row
    used: int = 0  # cache slots in use by any of the rows (slots fill in order): attention looks at these only


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, kv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, h * hd, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * kv * hd, bias=False)
        self.o = nn.Linear(h * hd, cfg.d_model, bias=False)

    def forward(self, x, ctx: Context, layer: int = 0):
        B, S, _ = x.shape
        cfg = self.cfg
        q = self.q(x).view(B, S, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(B, S, 2, cfg.n_kv_head, cfg.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, ctx.cos, ctx.sin), rotate(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:  # write the chunk into its slots, then attend over the rows' whole cache
            r = ctx.rows[:, None]
            ctx.cache.k[layer][r, :, ctx.slot] = k.transpose(1, 2)
            ctx.cache.v[layer][r, :, ctx.slot] = v.transpose(1, 2)
            k, v = ctx.cache.k[layer][:, :, : ctx.used], ctx.cache.v[layer][:, :, : ctx.used]
            # the query heads that share a key/value head attend as one longer query (ctx.mask is folded alike)
            q = q.reshape(B, cfg.n_kv_head, -1, cfg.head_dim)
            if ctx.row_list is not None:  # attend row by row over views of the cache: gathering rows would copy it
                y = torch.cat([F.scaled_dot_product_attention(q[i : i + 1], k[r : r + 1], v[r : r + 1],
                                                              attn_mask=ctx.mask[i : i + 1])
                               for i, r in enumerate(ctx.row_list)])
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask)
            return self.o(y.view(B, cfg.n_head, S, cfg.head_dim).transpose(1, 2).reshape(B, S, -1))
        if ctx.mask is None:  # the fused causal kernel, no mask in memory
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.mask, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(B, S, -1))


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
            if tok.numel() or self.training:  # (an expert with no tokens gets a zero gradient: see embed.inputs)
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

    def forward(self, x, ctx: Context, layer: int = 0):
        x = x + self.attn(self.n1(x), ctx, layer)
        return x + self.mlp(self.n2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model)

    def forward(self, x, pos, cache: KVCache | None = None, rows: torch.Tensor | None = None, tap: int = 0):
        """x [B, S, d] at absolute positions pos [B, S]. With a cache: a streaming chunk for the cache rows ``rows``
        (default: all), stored in their slots; other rows are neither computed nor touched. With ``tap`` = k > 0,
        returns (out, the normed states after the first k blocks), for a training loss on what the lower layers
        know."""
        cfg = self.cfg
        cos, sin = rope(pos, cfg.head_dim)
        if cache is None:
            mask = None if x.shape[1] <= cfg.window else visible(pos, pos, cfg.window, cfg.pinned)
            ctx = Context(cos, sin, mask)
        else:
            n_cache = cache.pos.shape[0]
            rows = torch.arange(n_cache, device=pos.device) if rows is None else rows
            slot = cache.slots(pos)
            k_pos = cache.pos[rows].clone()
            k_pos.scatter_(1, slot, pos)
            used = min(k_pos.shape[1], int(pos.max()) + 1)  # a session's slots fill in order, then the ring wraps
            ok = visible(pos, k_pos[:, :used], cfg.window, cfg.pinned)  # [n, 1, S, used]
            g = cfg.n_head // cfg.n_kv_head  # query heads per key/value head, folded into the query length
            ok = ok[:, :, None].expand(-1, -1, g, -1, -1).flatten(2, 3)
            mask = torch.zeros(ok.shape, dtype=x.dtype, device=x.device).masked_fill_(~ok, float("-inf"))
            ctx = Context(cos, sin, mask, cache, rows, slot, None if len(rows) == n_cache else rows.tolist(), used)
        tapped = None
        for i, b in enumerate(self.blocks):
            x = b(x, ctx, i)
            if i + 1 == tap:
                tapped = self.norm(x)
        if cache is not None:
            cache.pos[rows] = k_pos
        if tap:
            if tapped is None:
                raise ValueError(f"tap must be in 1 .. {len(self.blocks)} blocks, got {tap}")
            return self.norm(x), tapped
        return self.norm(x)

    def aux_loss(self) -> torch.Tensor:
        losses = [b.mlp.aux_loss for b in self.blocks if isinstance(b.mlp, MoE)]
        return torch.stack(losses).mean() if losses else torch.zeros(())
