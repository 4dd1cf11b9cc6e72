"""Growing a trained model to a larger depth that computes exactly what it computed (``microturn model grow``).

The depth dial sets the width (64 per step), the heads and the layers together, so a deeper model is also wider. A
grown model keeps every trained weight in place and starts its new units where they change nothing:

- the residual stream's new dimensions start at zero: every weight that writes into them (embeddings, attention
  outputs, feed-forward outputs) starts at zero, while the weights that read them start at random, so the first
  gradient reaches the writers. The norms over the wider stream are scaled by sqrt(old width / new width) so that
  their output is unchanged;
- new units inside a layer (attention heads, feed-forward units, the audio front-end's and the video stem's wider
  vectors) start at random, and every weight that reads them starts at zero;
- new layers start as the identity: their attention and feed-forward outputs are zero.
- A key/value head shared by two query heads is copied to each when the new depth gives every head its own.

Growth is exact (``tests/test_model.py`` checks the outputs on a batch) and costs no training: the training that
follows (``microturn train --init``) starts from the old model's loss and has more room to learn.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from .model import InteractionModel

# How each dimension of a weight grows. "res": the residual stream's width; "mid": a wider vector inside a module
# (the audio frames, a video patch); "head": the query heads (q's rows, o's columns, both h x 64 wide); "kv": the
# key/value heads (kv's rows, [2, kv heads, 64]); "ff": the feed-forward units (down's columns); "ff2": up's rows,
# [2, ff units]; "frames" / "patches": a token's concatenated frame / patch vectors, [n, mid]; "=": unchanged.
# The second letter says whether the new entries are written ("w") or read ("r") by this weight.
_SPECS = [
    (r"embed\.no_video", ["res.w"]),
    (r"embed\.slot", ["=", "res.w"]),
    (r"embed\.clock\.proj\.weight", ["res.w", "="]),
    (r"embed\.clock\.proj\.bias", ["res.w"]),
    (r"embed\.audio\.frame\.weight", ["=", "mid.w"]),
    (r"embed\.audio\.conv\.convs\.\d+\.weight", ["mid.w", "mid.r", "="]),
    (r"embed\.audio\.conv\.convs\.\d+\.bias", ["mid.w"]),
    (r"embed\.audio\.token\.weight", ["res.w", "frames.r"]),
    (r"embed\.audio\.token\.bias", ["res.w"]),
    (r"embed\.video\.s[12]\.(weight|bias)", None),  # its own widths, not the model's
    (r"embed\.video\.s3\.weight", ["mid.w", "="]),
    (r"embed\.video\.s3\.bias", ["mid.w"]),
    (r"embed\.merge\.weight", ["res.w", "patches.r"]),
    (r"embed\.merge\.bias", ["res.w"]),
    (r"embed\.text\.weight", ["=", "res.w"]),
    (r"embed\.heard\.weight", ["res.w", "res.r"]),
    (r"transformer\.blocks\.\d+\.n[12]\.weight|transformer\.norm\.weight", "norm"),
    (r"transformer\.blocks\.\d+\.attn\.q\.weight", ["head.w", "res.r"]),
    (r"transformer\.blocks\.\d+\.attn\.kv\.weight", ["kv.w", "res.r"]),
    (r"transformer\.blocks\.\d+\.attn\.o\.weight", ["res.w", "head.r"]),
    (r"transformer\.blocks\.\d+\.mlp\.(experts\.\d+\.)?up\.weight", ["ff2.w", "res.r"]),
    (r"transformer\.blocks\.\d+\.mlp\.(experts\.\d+\.)?down\.weight", ["res.w", "ff.r"]),
    (r"transformer\.blocks\.\d+\.mlp\.router\.weight", ["=", "res.r"]),
    (r"listen\.weight", ["=", "res.r"]),
    (r"listen\.bias", None),
    (r"flow\.cond\.weight", ["=", "res.r"]),
    (r"flow\.(?!cond\.weight).*", None),  # the flow head's own width
]


def _sources(kind: str, old, new) -> torch.Tensor:
    """For each new index of a dimension of this kind, the old index it copies (-1: a new unit)."""
    def pad(n_old, n_new):
        return torch.cat([torch.arange(n_old), torch.full((n_new - n_old,), -1)])

    def blocks(n, w_old, w_new):  # n concatenated vectors of width w_old -> w_new
        return torch.cat([torch.where(s >= 0, s + i * w_old, -1) for i, s in enumerate([pad(w_old, w_new)] * n)])

    if kind in ("res", "mid", "head"):
        return pad(old.d_model, new.d_model)
    if kind == "ff":
        return pad(old.d_ff, new.d_ff)
    if kind == "ff2":
        return blocks(2, old.d_ff, new.d_ff)
    if kind == "frames":
        return blocks(old.layout.frames_per_token, old.d_model, new.d_model)
    if kind == "patches":
        return blocks(old.layout.n_patches, old.d_model, new.d_model)
    if kind == "kv":  # new kv head n serves query heads n*g .. n*g + g - 1; it copies the old kv head they shared
        g_old, g_new, hd = old.n_head // old.n_kv_head, new.n_head // new.n_kv_head, new.head_dim
        src = []
        for n in range(new.n_kv_head):
            shared = {i // g_old for i in range(n * g_new, (n + 1) * g_new) if i < old.n_head}
            if len(shared) > 1:
                raise ValueError(f"cannot grow depth {old.depth} to {new.depth} exactly: query heads that used "
                                 f"different key/value heads would share one")
            src.append(shared.pop() if shared else -1)
        return torch.cat([torch.tensor([c * old.n_kv_head * hd + s * hd + j if s >= 0 else -1 for s in src
                                        for j in range(hd)]) for c in range(2)])
    raise AssertionError(kind)


def _spec(name: str):
    for pattern, spec in _SPECS:
        if re.fullmatch(pattern, name):
            return spec
    raise ValueError(f"do not know how to grow the weight {name!r}: add it to microturn.model.grow._SPECS")


def grow(old: InteractionModel, depth: int, seed: int = 0) -> InteractionModel:
    """A model of ``depth`` (the old model's config otherwise) whose outputs are the old model's; its new random
    weights come from ``seed``."""
    c0 = old.cfg
    if depth <= c0.depth:
        raise ValueError(f"a grown model must be deeper than depth {c0.depth}, got depth {depth}")
    cfg = replace(c0, depth=depth)
    if cfg.head_dim != c0.head_dim:
        raise ValueError(f"cannot grow depth {c0.depth}: its heads are {c0.head_dim} wide, depth {depth}'s "
                         f"{cfg.head_dim}")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        new = InteractionModel(cfg)
    before, state = old.state_dict(), new.state_dict()
    scale = math.sqrt(c0.d_model / cfg.d_model)  # an RMS norm over zeros added to the stream: its input is smaller
    for name, t in state.items():
        if name not in before:  # a new layer: the identity, its outputs zero
            if re.search(r"attn\.o\.weight|down\.weight", name):
                t.zero_()
            continue
        w, spec = before[name], _spec(name)
        if spec is None:
            if w.shape != t.shape:
                raise ValueError(f"{name}: expected the same shape at depth {depth}, got {tuple(w.shape)} -> "
                                 f"{tuple(t.shape)}")
            t.copy_(w)
            continue
        if spec == "norm":
            t.fill_(float(w.abs().mean()) * scale)  # new entries scale zeros: any value, this one of the old size
            t[: w.shape[0]] = w * scale
            continue
        kinds = [s.split(".") for s in spec]
        srcs = [torch.arange(n) if k == ["="] else _sources(k[0], c0, cfg) for k, n in zip(kinds, t.shape)]
        for k, s, n_old, n in zip(kinds, srcs, w.shape, t.shape):
            if len(s) != n or int(s.max()) + 1 != n_old:
                raise AssertionError(f"{name}: {k} maps {n_old} -> {len(s)}, the tensor is {n_old} -> {n}")
        kept = [s >= 0 for s in srcs]
        t[torch.meshgrid(*[torch.nonzero(m)[:, 0] for m in kept], indexing="ij")] = \
            w[torch.meshgrid(*[s[m] for s, m in zip(srcs, kept)], indexing="ij")]
        for dim, (k, m) in enumerate(zip(kinds, kept)):
            written_stream = k == ["res", "w"]  # the stream's new dimensions stay zero until trained
            read_unit = len(k) == 2 and k[0] != "res" and k[1] == "r"  # new units are read by nothing yet
            if written_stream or read_unit:
                t.index_fill_(dim, torch.nonzero(~m)[:, 0], 0.0)
    new.load_state_dict(state)
    return new


@torch.no_grad()
def difference(old: InteractionModel, new: InteractionModel, micro_turns: int = 20, seed: int = 0) -> float:
    """The largest difference between the old model's final hidden states and the same dimensions of the grown
    model's, relative to the largest state, on random inputs (every slot: sound, video, typed and said tokens)."""
    cfg, g = old.cfg, torch.Generator().manual_seed(seed)
    L, T = cfg.layout, micro_turns
    batch = {"clock": torch.arange(T)[None],
             "audio": torch.randint(0, 16, (1, T, L.n_audio, L.frames_per_token, 80), generator=g).to(torch.uint8),
             "video": torch.randint(0, 256, (1, T, L.video_size, L.video_size, 3), generator=g).to(torch.uint8),
             "video_on": torch.rand(1, T, generator=g) > 0.5,
             "text_in": torch.randint(0, cfg.vocab_size, (1, T, L.n_text_in), generator=g),
             "out": torch.randint(0, cfg.vocab_size, (1, T, L.n_out), generator=g)}
    h0, h = old.eval().hidden(batch), new.eval().hidden(batch)
    return float((h[..., : cfg.d_model] - h0).abs().max() / h0.abs().max())
