"""InteractionModel: embedders + transformer + heads over the micro-turn stream.

Two entry points over the same weights:
- ``forward(batch)``: training, teacher forcing over whole sessions, returns the losses;
- ``step(state, ...)``: streaming, one micro-turn for a batch of sessions with explicit, resettable ``StreamState``.
A test proves they compute the same thing (also across the sliding window and for masked batches).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..stream.layout import Layout, out_loss_mask
from ..stream.tokenizer import BG, EOT, PAD, SIL, TYPED
from .config import ModelConfig
from .embed import InputEmbed
from .heads import FlowHead
from .transformer import KVCache, Transformer

INPUT_KEYS = ("clock", "audio", "video", "video_on", "text_in")
NEVER_SAID = (PAD, TYPED, BG, SIL)  # input-side tokens the agent never emits


@dataclass
class StreamState:
    """Everything a batch of streaming sessions carries between micro-turns."""

    cache: KVCache
    length: torch.Tensor  # [B] tokens seen so far (the next token's absolute position)
    t: torch.Tensor  # [B] next micro-turn index (the clock)

    def reset(self, rows: torch.Tensor | None = None):
        rows = torch.ones_like(self.length, dtype=torch.bool) if rows is None else rows
        self.cache.reset(rows)
        self.length[rows] = 0
        self.t[rows] = 0


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    flow_steps: int = 4
    flow_temperature: float = 1.0


@dataclass
class StepOutput:
    out: torch.Tensor  # [B, n_out] tokens of this micro-turn (words, controls, <eot>, <pad>)
    mel: torch.Tensor | None  # [B, frames, 80] agent log-mel of the next window
    text_logits: torch.Tensor  # [B, n_out, V] the distribution each out token was drawn from
    listen_logits: torch.Tensor  # [B, n_audio, V] what the model hears the user say
    hidden: torch.Tensor  # [B, length, d] final hidden states of the block


Generators = "torch.Generator | list[torch.Generator] | None"


def sample(logits: torch.Tensor, s: Sampling, generator: Generators = None) -> torch.Tensor:
    """Temperature and nucleus sampling of [B, V] logits (greedy at temperature 0). A list of generators, one per
    row, makes each session's draws independent of which other sessions share its batch."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    probs = (logits / s.temperature).softmax(-1)
    if s.top_p < 1.0:
        p, i = probs.sort(-1, descending=True)
        keep = p.cumsum(-1) - p < s.top_p
        probs = torch.zeros_like(probs).scatter(-1, i, p * keep)
    probs = probs / probs.sum(-1, keepdim=True)
    if isinstance(generator, list):
        # rows without a generator (idle sessions) draw nothing, so their random streams stay where they were
        return torch.cat([torch.multinomial(p[None], 1, generator=g)[0] if g is not None else p.argmax(-1, True)
                          for p, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator)[..., 0]


class InteractionModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        L, d = cfg.layout, cfg.d_model
        self.embed = InputEmbed(L, d, cfg.vocab_size)
        self.transformer = Transformer(cfg)
        self.listen = nn.Linear(d, cfg.vocab_size)
        self.flow = FlowHead(d, L.frames, cfg.flow_width)
        self.apply(self._init)
        nn.init.zeros_(self.flow.out.weight)  # the flow starts by predicting zero velocity

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def layout(self) -> Layout:
        return self.cfg.layout

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def text_logits(self, h):
        return h @ self.embed.text.weight.T  # tied to the text embedding

    # ------------------------------------------------------------------ training
    def hidden(self, batch: dict) -> torch.Tensor:
        """Teacher-forced final hidden states [B, T, L, d]."""
        x = self.embed(*(batch[k] for k in INPUT_KEYS), batch["out"])
        B, T, L, d = x.shape
        pos = torch.arange(T * L, device=x.device).expand(B, -1)
        return self.transformer(x.reshape(B, T * L, d), pos).view(B, T, L, d)

    def forward(self, batch: dict, speak_weight: float = 1.0, generator: torch.Generator | None = None) -> dict:
        """Losses of a batch (see ``microturn.train.data.collate``): text (agent words and controls, up to each
        micro-turn's <eot>), flow (agent mel), listen (user words per audio token), moe (load balance)."""
        L = self.layout
        h = self.hidden(batch)
        B, T = h.shape[:2]
        valid = batch.get("valid", torch.ones(B, T, dtype=torch.bool, device=h.device))
        out = batch["out"]
        logits = self.text_logits(h[:, :, L.n_in - 1 : L.n_in - 1 + L.n_out])  # predicts out slot 0 .. n_out-1
        mask = out_loss_mask(out) & valid[..., None]
        weight = mask.float() * torch.where(out == EOT, 1.0, speak_weight)
        ce = F.cross_entropy(logits.flatten(0, 2), out.flatten(), reduction="none").view_as(weight)
        text = (ce * weight).sum((1, 2)) / weight.sum((1, 2)).clamp_min(1)  # per session [B]
        lg = self.listen(h[:, :, 1 : 1 + L.n_audio])
        lmask = valid[..., None].expand(-1, -1, L.n_audio).float()
        lce = F.cross_entropy(lg.flatten(0, 2), batch["listen"].flatten(), reduction="none").view_as(lmask)
        listen = (lce * lmask).sum((1, 2)) / lmask.sum((1, 2)).clamp_min(1)
        fl = self.flow.loss(h[:, :, -1].flatten(0, 1), batch["mel"].flatten(0, 1), generator).view(B, T)
        flow = (fl * valid).sum(1) / valid.sum(1).clamp_min(1)
        moe = self.transformer.aux_loss()
        loss = text.mean() + 0.5 * listen.mean() + flow.mean() + 0.01 * moe
        return {"loss": loss, "text": text, "listen": listen, "flow": flow, "moe": moe, "listen_logits": lg}

    # ------------------------------------------------------------------ streaming
    def new_state(self, batch: int = 1, device=None) -> StreamState:
        return StreamState(KVCache.empty(self.cfg, batch, device=device),
                           torch.zeros(batch, dtype=torch.long, device=device),
                           torch.zeros(batch, dtype=torch.long, device=device))

    def _run(self, state, x, rows):
        pos = state.length[rows, None] + torch.arange(x.shape[1], device=x.device)
        h = self.transformer(x, pos, state.cache, rows=rows)
        state.length[rows] += x.shape[1]
        return h

    @torch.no_grad()
    def step(self, state: StreamState, audio, video, video_on, text_in, active: torch.Tensor | None = None,
             forced_out: torch.Tensor | None = None, sampling: Sampling = Sampling(), generate_audio: bool = True,
             generator: Generators = None) -> StepOutput:
        """One micro-turn for the sessions of the batch: audio [B, A, F, 80] uint8, video [B, S, S, 3] uint8,
        video_on [B], text_in [B, K]. Only rows where ``active`` [B] is true are computed (their state advances;
        the others' outputs are <pad>/zeros and their state is untouched), so a step costs what its active
        sessions cost. ``forced_out`` [B, n_out] feeds given out tokens instead of sampling (teacher forcing).
        ``generator``: one for the batch, or a list with one per row (then a row's draws do not depend on the
        others)."""
        L = self.layout
        B = audio.shape[0]
        dev = audio.device
        rows = torch.arange(B, device=dev) if active is None else active.nonzero(as_tuple=True)[0]
        n = len(rows)
        gen = [generator[i] for i in rows.tolist()] if isinstance(generator, list) else generator
        clock = state.t[rows, None]
        x = self.embed.inputs(clock, audio[rows, None], video[rows, None], video_on[rows, None],
                              text_in[rows, None])[:, 0]
        hs = [self._run(state, x, rows)]
        logits, toks = [], []
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for i in range(L.n_out):
            lg = self.text_logits(hs[-1][:, -1])
            if forced_out is not None:
                tok = forced_out[rows, i]
            else:
                masked = lg.clone()
                masked[:, list(NEVER_SAID)] = float("-inf")
                tok = sample(masked, sampling, gen)
                tok = torch.where(done, PAD, tok)
                if i == L.n_out - 1:
                    tok = torch.where(done, PAD, torch.full_like(tok, EOT))
            done = done | (tok == EOT)
            logits.append(lg)
            toks.append(tok)
            if forced_out is None and bool(done.all()):  # the rest is padding: feed it in one chunk
                rest = torch.cat([torch.stack(toks, 1), torch.full((n, L.n_out - i - 1), PAD, device=dev)], 1)
                hs.append(self._run(state, self.embed.outputs(rest[:, None, i:], i)[:, 0], rows))
                logits += [torch.zeros_like(lg)] * (L.n_out - i - 1)
                toks = list(rest.unbind(1))
                break
            hs.append(self._run(state, self.embed.outputs(tok[:, None, None], i)[:, 0], rows))
        h = torch.cat(hs, 1)
        state.t[rows] += 1
        mel = self.flow.sample(h[:, -1], sampling.flow_steps, sampling.flow_temperature, gen) \
            if generate_audio else None

        def full(t, fill=0):  # back to the whole batch
            o = torch.full((B,) + t.shape[1:], fill, dtype=t.dtype, device=dev)
            o[rows] = t
            return o

        return StepOutput(full(torch.stack(toks, 1), PAD), None if mel is None else full(mel, -7.0),
                          full(torch.stack(logits, 1)), full(self.listen(h[:, 1 : 1 + L.n_audio])), full(h))
