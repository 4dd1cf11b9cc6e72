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

from ..codecs import dmel
from ..stream.layout import Layout, out_loss_mask
from ..stream.tokenizer import DLG, DLG_END, EOT, NOTE, PAD, SIL, SPECIALS, TYPED, is_heard, is_timer
from .config import ModelConfig
from .embed import InputEmbed
from .heads import FlowHead
from .transformer import KVCache, Transformer

INPUT_KEYS = ("clock", "audio", "video", "video_on", "text_in")
NEVER_SAID = (PAD, TYPED, SIL)  # input-side tokens the agent never emits (<bg> it writes to recite a held answer)
# Micro-turns of agent audio after a word token: the agent's words last under 0.6 s, so its audio is over three
# windows after the word started (checked on the training shards); later windows are silence, not generated.
SPEECH_TAIL = 4


@dataclass
class StreamState:
    """Everything a batch of streaming sessions carries between micro-turns."""

    cache: KVCache
    length: torch.Tensor  # [B] tokens in the cache so far (the next token's absolute position)
    t: torch.Tensor  # [B] next micro-turn index (the clock)
    tail: torch.Tensor  # [B, n_out] the last micro-turn's out tokens
    n_tail: torch.Tensor  # [B] how many of them (its <eot> and the <pad>s after it) are still to be fed
    quiet: torch.Tensor  # [B] micro-turns since the row last said a word (up to SPEECH_TAIL: its audio is over)
    noting: torch.Tensor  # [B] bool: the row's last token was a <note> (its next word is written, not said)
    asking: torch.Tensor  # [B] bool: the row is writing a delegation's query (<dlg> ... </dlg>: not said)
    audio_past: torch.Tensor  # [B, context, 80] uint8: the last audio frames heard, the audio front-end's context
    heard: torch.Tensor  # [B, n_audio] the words the listening head heard last micro-turn, fed back (hear_back)
    doubt: torch.Tensor  # [B] float: the chance that the row's doubts so far all came out silent (Sampling.doubt_floor)

    def reset(self, rows: torch.Tensor | None = None):
        rows = torch.ones_like(self.length, dtype=torch.bool) if rows is None else rows
        self.cache.reset(rows)
        self.length[rows] = 0
        self.t[rows] = 0
        self.n_tail[rows] = 0
        self.quiet[rows] = SPEECH_TAIL
        self.noting[rows] = False
        self.asking[rows] = False
        self.audio_past[rows] = 0
        self.heard[rows] = SIL
        self.doubt[rows] = 1.0

    @property
    def tokens(self) -> torch.Tensor:
        """[B] tokens of the stream so far (fed or still to be fed): micro-turns x layout.length."""
        return self.length + self.n_tail


WARP_BOUNDS = (0.5, 2.0)  # the vocal-tract scales Sampling.warps accepts


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    # greedy decoding decides in two parts: speak (go on) when the words' total probability exceeds this, and if
    # so, the likeliest word; plain argmax would need one word alone to beat <eot>, though the words share their mass
    speak_threshold: float = 0.5
    flow_steps: int = 4
    flow_temperature: float = 1.0
    # test-time augmentation: hear each micro-turn through these vocal-tract scales (``dmel.warp_channels``; 1.0 is
    # the audio as it came), one stream of the model each, and decide on the mean of their probabilities
    # (``InteractionModel.step``'s ``tie``); empty: the audio alone. Costs up to their number times the compute.
    warps: tuple[float, ...] = ()
    # greedy decoding remembers doubts: while the agent is quiet (its last word's audio over), consecutive micro-turns
    # whose speak probability p is at least this floor combine into the chance that sampling would have spoken by
    # now, 1 - prod(1 - p), and the agent speaks once that exceeds the threshold; a micro-turn under the floor
    # forgets them. None: each micro-turn decides alone. (Sampling at a temperature needs no memory: its draws are
    # the chance itself.)
    doubt_floor: float | None = None

    def __post_init__(self):
        try:
            self.warps = tuple(float(w) for w in self.warps)
        except (TypeError, ValueError):
            raise ValueError(f"Sampling.warps must be a list of numbers, got {self.warps!r}") from None
        for name, ok in (("temperature", self.temperature >= 0), ("top_p", 0 < self.top_p <= 1),
                         ("speak_threshold", 0 <= self.speak_threshold < 1), ("flow_steps", self.flow_steps >= 1),
                         ("flow_temperature", self.flow_temperature >= 0),
                         ("doubt_floor", self.doubt_floor is None or 0 < self.doubt_floor < 1)):
            if not ok:
                raise ValueError(f"Sampling.{name} out of range: {getattr(self, name)!r}")
        if not all(WARP_BOUNDS[0] <= w <= WARP_BOUNDS[1] for w in self.warps):
            raise ValueError(f"Sampling.warps out of range: {self.warps!r} (each a vocal-tract scale in "
                             f"[{WARP_BOUNDS[0]}, {WARP_BOUNDS[1]}])")

    @staticmethod
    def parse_warps(text: str) -> tuple[float, ...]:
        """A command line's warps: comma-separated scales ("0.9,1,1.1"), or "none" (the audio alone)."""
        if text.strip().lower() == "none":
            return ()
        try:
            return tuple(float(w) for w in text.split(","))
        except ValueError:
            raise ValueError(f"warps must be comma-separated numbers such as 0.9,1,1.1, or none; got {text!r}") \
                from None

    @classmethod
    def of(cls, model: "InteractionModel", **overrides) -> "Sampling":
        """The checkpoint's own decoding settings (``extra.sampling`` in its config.json, e.g. the speak threshold
        tuned on held-out data), then ``overrides``."""
        own = (getattr(model, "checkpoint_info", None) or {}).get("sampling", {})
        return cls(**(own | overrides))


def out_weights(out: torch.Tensor, speak_weight: float) -> torch.Tensor:
    """The text loss's weight of each out token [..., n_out]: ``speak_weight`` for words and silent tokens, 1 for
    ``<eot>``, except the ``<eot>`` right after a heard token, the decision not to act on it, which weighs as much
    as acting (at 1 against 3, a model that cannot tell a cue from the other cue-list words gains by acting on all:
    session 14's acted after 94 % of either in training drills)."""
    decide = torch.zeros_like(out, dtype=torch.bool)
    decide[..., 1:] = is_heard(out[..., :-1])
    return torch.where((out == EOT) & ~decide, 1.0, speak_weight)


@dataclass
class StepOutput:
    out: torch.Tensor  # [B, n_out] tokens of this micro-turn (words, controls, <eot>, <pad>)
    mel: torch.Tensor | None  # [B, frames, 80] agent log-mel of the next window
    text_logits: torch.Tensor  # [B, n_out, V] the distribution each out token was drawn from
    heard: torch.Tensor  # [B, n_audio, d] hidden states of the audio tokens: model.listen(heard) -> the user's words
    cond: torch.Tensor  # [B, d] the hidden state the mel was generated from (the one that predicted <eot>)


Generators = "torch.Generator | list[torch.Generator] | None"


def sample(logits: torch.Tensor, s: Sampling, generator: Generators = None,
           silent: torch.Tensor | None = None) -> torch.Tensor:
    """Temperature and nucleus sampling of [B, V] logits (greedy at temperature 0). A list of generators, one per
    row, makes each session's draws independent of which other sessions share its batch. ``silent`` [B]: greedy
    decoding's chance that each row's earlier doubts all came out silent, which scales this <eot>'s probability
    (``Sampling.doubt_floor``)."""
    if s.temperature <= 0:
        still = logits.softmax(-1)[:, EOT] * (1 if silent is None else silent)
        speak = 1 - still > s.speak_threshold
        words = logits.clone()
        words[:, EOT] = float("-inf")
        return torch.where(speak, words.argmax(-1), EOT)
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
        self.embed = InputEmbed(L, d, cfg.vocab_size, cfg.audio_conv, cfg.hear_back)
        self.transformer = Transformer(cfg)
        self.listen = nn.Linear(d, cfg.vocab_size)
        self.flow = FlowHead(d, L.frames, cfg.flow_width)
        self.apply(self._init)
        nn.init.zeros_(self.flow.out.weight)  # the flow starts by predicting zero velocity
        if self.embed.heard is not None:
            nn.init.zeros_(self.embed.heard.weight)  # hearing back starts at zero: the model starts as it was
        never = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        never[list(NEVER_SAID)] = True
        self.register_buffer("never_said", never, persistent=False)

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
    def hidden(self, batch: dict, tap: int = 0):
        """Teacher-forced final hidden states [B, T, L, d]; with ``tap`` = k > 0, also those after the first k
        blocks (normed), as a pair. A ``hear_back`` model reads ``batch["heard"]``, or else ``heard_back(batch)``."""
        heard = batch.get("heard")
        if self.cfg.hear_back and heard is None:
            heard = self.heard_back(batch)
        x = self.embed(*(batch[k] for k in INPUT_KEYS), batch["out"], heard=heard)
        B, T, L, d = x.shape
        pos = torch.arange(T * L, device=x.device).expand(B, -1)
        h = self.transformer(x.reshape(B, T * L, d), pos, tap=tap)
        return tuple(y.view(B, T, L, d) for y in h) if tap else h.view(B, T, L, d)

    @torch.no_grad()
    def heard_back(self, batch: dict) -> torch.Tensor:
        """The words a ``hear_back`` model reads back [B, T, n_audio], for teacher forcing: streaming feeds each
        micro-turn the listening head's likeliest word for each audio token of the micro-turn before (``step``), which
        depends on what it was fed in turn, so it cannot be computed in one parallel pass. This takes one pass
        hearing nothing back (all ``<sil>``): its words are what streaming would feed if hearing back did not change
        the listening, exact for a model that has just been given it and close while the listening head leans on
        the audio. The model thus trains on its own mistakes, not on the listening targets (which name a word from
        its first audio token on, before it can be heard)."""
        L = self.layout
        none = torch.full((*batch["clock"].shape, L.n_audio), SIL, dtype=torch.long, device=batch["clock"].device)
        h = self.hidden(batch | {"heard": none})
        words = self.listen(h[:, :, 1 : 1 + L.n_audio]).argmax(-1)
        return torch.cat([none[:, :1], words[:, :-1]], 1)

    def flow_condition(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The hidden state each micro-turn's mel is generated from [B, T, d]: the position that predicts its <eot>
        (it has seen every word of the micro-turn). The <eot> and the <pad>s after it then predict nothing this
        micro-turn, so streaming feeds them at the start of the next one (one forward call per silent micro-turn)."""
        L = self.layout
        e = (out == EOT).int().argmax(-1)  # [B, T] the <eot>'s slot (0 for padding micro-turns: all <pad>)
        idx = (L.n_in - 1 + e)[..., None, None].expand(-1, -1, 1, h.shape[-1])
        return h.gather(2, idx)[:, :, 0]

    def forward(self, batch: dict, speak_weight: float = 1.0, recap_weight: float = 1.0, early_listen: int = 0,
                listen_weight: torch.Tensor | None = None, listen_scale: float = 0.5,
                generator: torch.Generator | None = None) -> dict:
        """Losses of a batch (see ``microturn.train.data.collate``): text (agent words and controls, up to each
        micro-turn's <eot>), flow (agent mel), listen (user words per audio token), moe (load balance). Out tokens
        other than <eot>, and an <eot> right after a heard token (not acting on it), weigh ``speak_weight``
        (``out_weights``); those the batch marks as recaps (``layout.recaps``) that much times ``recap_weight``.
        With ``early_listen`` = k > 0 the listening head also reads the audio tokens after the first k blocks
        (``listen_early``, same weight): a word recognised only in the last block is seen by no other token
        (attention reads the block below), so the out slots could not note what was heard.
        ``listen_weight`` [vocab] weighs each listening target by its token (e.g. the task words up);
        ``listen_scale`` weighs the listening losses against the text and flow losses in ``loss``."""
        L = self.layout
        h, early = self.hidden(batch, tap=early_listen) if early_listen else (self.hidden(batch), None)
        B, T = h.shape[:2]
        valid = batch.get("valid", torch.ones(B, T, dtype=torch.bool, device=h.device))
        out = batch["out"]
        logits = self.text_logits(h[:, :, L.n_in - 1 : L.n_in - 1 + L.n_out])  # predicts out slot 0 .. n_out-1
        mask = out_loss_mask(out) & valid[..., None]
        weight = mask.float() * out_weights(out, speak_weight)
        if recap_weight != 1.0 and "recap" in batch:
            weight = weight * torch.where(batch["recap"], recap_weight, 1.0)
        ce = F.cross_entropy(logits.flatten(0, 2), out.flatten(), reduction="none").view_as(weight)
        text = (ce * weight).sum((1, 2)) / weight.sum((1, 2)).clamp_min(1)  # per session [B]
        lmask = valid[..., None].expand(-1, -1, L.n_audio).float()
        if listen_weight is not None:
            lmask = lmask * listen_weight[batch["listen"]]

        def listening(states):  # the listening head on the audio tokens: logits, loss per session [B]
            lg = self.listen(states[:, :, 1 : 1 + L.n_audio])
            lce = F.cross_entropy(lg.flatten(0, 2), batch["listen"].flatten(), reduction="none").view_as(lmask)
            return lg, (lce * lmask).sum((1, 2)) / lmask.sum((1, 2)).clamp_min(1)

        lg, listen = listening(h)
        lg_early, listen_early = listening(early) if early is not None else (None, torch.zeros_like(listen))
        mel = batch["mel"]  # the agent's speech: dMel bins (uint8, as shards hold them) or their levels
        mel = dmel.dequantize(mel) if mel.dtype == torch.uint8 else mel
        fl = self.flow.loss(self.flow_condition(h, out).flatten(0, 1), mel.flatten(0, 1), generator)
        fl = fl.view(B, T)
        flow = (fl * valid).sum(1) / valid.sum(1).clamp_min(1)
        moe = self.transformer.aux_loss()
        loss = text.mean() + listen_scale * (listen.mean() + listen_early.mean()) + flow.mean() + 0.01 * moe
        early_logits = {} if lg_early is None else {"listen_early_logits": lg_early}
        return {"loss": loss, "text": text, "listen": listen, "listen_early": listen_early, "flow": flow, "moe": moe,
                "listen_logits": lg, "out_logits": logits} | early_logits

    # ------------------------------------------------------------------ streaming
    def new_state(self, batch: int = 1, device=None) -> StreamState:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.long, device=device)  # noqa: E731
        return StreamState(KVCache.empty(self.cfg, batch, device=device), zeros(batch), zeros(batch),
                           zeros(batch, self.layout.n_out), zeros(batch), zeros(batch) + SPEECH_TAIL,
                           zeros(batch).bool(), zeros(batch).bool(),
                           zeros(batch, self.embed.audio.context, dmel.N_MELS).to(torch.uint8),
                           zeros(batch, self.layout.n_audio) + SIL, torch.ones(batch, device=device))

    def _run(self, state, x, rows):
        pos = state.length[rows, None] + torch.arange(x.shape[1], device=x.device)
        h = self.transformer(x, pos, state.cache, rows=rows)
        state.length[rows] += x.shape[1]
        return h

    def _feed_inputs(self, state: StreamState, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Feed each row's pending tail (last micro-turn's <eot>, <pad>s) then its input tokens x [n, n_in, d];
        rows with tails of the same length share a forward call. -> hidden states of the inputs [n, n_in, d]."""
        L = self.layout
        n_tail = state.n_tail[rows]
        lengths = n_tail.unique().tolist()
        if len(lengths) == 1 and lengths[0] == 0:
            return self._run(state, x, rows)
        h = torch.empty_like(x)
        for m in lengths:
            sub = (n_tail == m).nonzero(as_tuple=True)[0]
            xs = x[sub]
            if m:
                tail = self.embed.outputs(state.tail[rows[sub], None, L.n_out - m :], L.n_out - m)[:, 0]
                xs = torch.cat([tail, xs], 1)
            h[sub] = self._run(state, xs, rows[sub])[:, m:]
        state.n_tail[rows] = 0
        return h

    @staticmethod
    def _said(state: StreamState, toks: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """[n] whether each row said a word in this micro-turn's out tokens [n, n_out]: not controls, timers, heard
        tokens, noted words or a delegation's query (the rule of ``stream.layout.OutputDecoder``: a note's word
        follows it, or the next micro-turn's timer; a query runs from <dlg> to </dlg>, over micro-turns)."""
        noting = state.noting[rows] & is_timer(toks[:, 0])
        asking = state.asking[rows]
        said = torch.zeros_like(noting)
        for x in toks.unbind(1):
            text = x >= len(SPECIALS)
            word = text | is_heard(x)  # what a note holds (a cue-list word as its heard token)
            said |= text & ~noting & ~asking
            asking = (asking | (x == DLG)) & (x != DLG_END)
            noting = (x == NOTE) | (noting & ~word)
        state.noting[rows] = noting
        state.asking[rows] = asking
        return said

    @torch.no_grad()
    def step(self, state: StreamState, audio, video, video_on, text_in, active: torch.Tensor | None = None,
             forced_out: torch.Tensor | None = None, sampling: Sampling = Sampling(), generate_audio: bool = True,
             generator: Generators = None, tie: int = 1) -> StepOutput:
        """One micro-turn for the sessions of the batch: audio [B, A, F, 80] uint8, video [B, S, S, 3] uint8,
        video_on [B], text_in [B, K]. Only rows where ``active`` [B] is true are computed (their state advances;
        the others' outputs are <pad>/zeros and their state is untouched), so a step costs what its active
        sessions cost. ``forced_out`` [B, n_out] feeds given out tokens instead of sampling (teacher forcing; each
        active row needs its <eot>). ``generator``: one for the batch, or a list with one per row (then a row's
        draws do not depend on the others).

        A row's forward calls: its last micro-turn's tail (<eot>, <pad>s) and this micro-turn's inputs in one
        chunk, then one call per word it says. The mel comes from the state that predicted <eot>, so the tail is
        not needed until the next micro-turn: a silent micro-turn is a single forward call. The flow head runs for
        rows that said a word in the last ``SPEECH_TAIL`` micro-turns; once the agent's audio is over, the window is
        silence (``dmel.LOG_MIN``) without generating it.

        ``tie`` = K > 1: the batch holds each session K times, in K consecutive rows whose inputs differ (the same
        audio heard through K vocal tracts: test-time augmentation, ``Sampling.warps``). Each group's out tokens are
        decided once, from the mean of its rows' probabilities (by its first row's generator), and written to all
        of its rows, so they stay one conversation; only its first row runs the flow head."""
        L = self.layout
        B = audio.shape[0]
        dev = audio.device
        rows = torch.arange(B, device=dev) if active is None else active.nonzero(as_tuple=True)[0]
        n = len(rows)
        first = rows % tie == 0  # each group's first row: the one that decides for it and speaks
        if tie > 1:
            on = torch.ones(B, dtype=torch.bool, device=dev) if active is None else active
            if B % tie or (on.view(-1, tie).any(1) != on.view(-1, tie).all(1)).any():
                raise ValueError(f"tie={tie}: the active rows must be whole groups of {tie} consecutive rows")
        if forced_out is not None and not bool((forced_out[rows] == EOT).any(-1).all()):
            raise ValueError("forced_out: every active row needs an <eot> among its out tokens")
        gen = [generator[i] for i in rows.tolist()] if isinstance(generator, list) else generator
        past = state.audio_past[rows]
        x = self.embed.inputs(state.t[rows, None], audio[rows, None], video[rows, None], video_on[rows, None],
                              text_in[rows, None], past, state.heard[rows, None])[:, 0]
        if past.shape[1]:
            state.audio_past[rows] = torch.cat([past, audio[rows].flatten(1, 2)], 1)[:, -past.shape[1] :]
        h_in = self._feed_inputs(state, x, rows)
        if self.cfg.hear_back:  # what the next micro-turn reads back: the likeliest word of each audio token
            state.heard[rows] = self.listen(h_in[:, 1 : 1 + L.n_audio]).argmax(-1)
        toks = torch.full((n, L.n_out), PAD, dtype=torch.long, device=dev)
        logits = torch.zeros(n, L.n_out, self.cfg.vocab_size, device=dev)
        cond = torch.zeros(n, self.cfg.d_model, device=dev)
        live = torch.arange(n, device=dev)  # the rows still writing this micro-turn
        h = h_in[:, -1]
        for i in range(L.n_out):
            lg = self.text_logits(h)
            if forced_out is not None:
                tok = forced_out[rows[live], i]
            elif i == L.n_out - 1:  # the budget is spent: the micro-turn ends here
                tok = torch.full((len(live),), EOT, dtype=torch.long, device=dev)
            else:
                joint = lg if tie == 1 else lg.softmax(-1).view(-1, tie, lg.shape[-1]).mean(1).log()
                lead = live[::tie]
                masked = joint.masked_fill(self.never_said, float("-inf"))
                silent = None  # Sampling.doubt_floor: the first slot's chance that the doubts so far came out silent
                if i == 0 and sampling.doubt_floor is not None and sampling.temperature <= 0:
                    quiet = state.quiet[rows[lead]] >= SPEECH_TAIL  # the agent's audio is over
                    silent = torch.where(quiet, state.doubt[rows[lead]], 1.0)
                tok = sample(masked, sampling, [gen[j] for j in lead.tolist()] if isinstance(gen, list) else gen,
                             silent)
                if silent is not None:  # a quiet micro-turn in doubt that stays silent is remembered; any other forgets
                    eot = masked.softmax(-1)[:, EOT]
                    held = (tok == EOT) & (1 - eot >= sampling.doubt_floor) & quiet
                    state.doubt[rows[live]] = torch.where(held, silent * eot, 1.0).repeat_interleave(tie)
                tok = tok.repeat_interleave(tie)
            logits[live, i], toks[live, i] = lg, tok
            end = tok == EOT
            if end.any():
                done = live[end]
                cond[done] = h[end]
                state.tail[rows[done]] = toks[done]
                state.n_tail[rows[done]] = L.n_out - i
                live, h, tok = live[~end], h[~end], tok[~end]
            if not len(live):
                break
            h = self._run(state, self.embed.outputs(tok[:, None, None], i)[:, 0], rows[live])[:, -1]
        state.t[rows] += 1
        said = self._said(state, toks, rows)
        state.quiet[rows] = torch.where(said, 0, (state.quiet[rows] + 1).clamp_max(SPEECH_TAIL))
        mel = None
        if generate_audio:  # only rows whose audio is not over yet run the flow head; the others' window is silence
            mel = torch.full((n, L.frames, dmel.N_MELS), dmel.LOG_MIN, device=dev)
            voiced = ((state.quiet[rows] < SPEECH_TAIL) & first).nonzero(as_tuple=True)[0]
            if len(voiced):
                g = [gen[j] for j in voiced.tolist()] if isinstance(gen, list) else gen
                mel[voiced] = self.flow.sample(cond[voiced], sampling.flow_steps, sampling.flow_temperature, g)

        def full(t, fill=0):  # back to the whole batch
            o = torch.full((B,) + t.shape[1:], fill, dtype=t.dtype, device=dev)
            o[rows] = t
            return o

        return StepOutput(full(toks, PAD), None if mel is None else full(mel, dmel.LOG_MIN), full(logits),
                          full(h_in[:, 1 : 1 + L.n_audio]), full(cond))
