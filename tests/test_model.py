"""The model: streaming step == training forward (also across the sliding window and for masked batches), free-running
steps, MoE routing and balance, golden losses, checkpoints, each head learns, resettable state.

Regenerate the golden losses (only after an intended change to the model, its init or the layout):
    .venv/bin/python tests/test_model.py
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import microturn.model.model as model_mod
from microturn.model import checkpoint
from microturn.model.checkpoint import CheckpointError
from microturn.model.config import ModelConfig, preset
from microturn.model.grow import difference, grow
from microturn.model.model import InteractionModel, Sampling
from microturn.model.transformer import Context, MoE, RMSNorm, rope
from microturn.stream.tokenizer import EOT, PAD, SIL, SPECIALS

torch.set_num_threads(1)  # the machine's 2 cores are shared (see test_codecs.py)

GOLDEN = Path(__file__).with_name("golden_model_loss.json")
TINY = dict(depth=2, vocab_size=300, window=40, pinned=17, flow_width=32)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**(TINY | kw))


def build(cfg: ModelConfig, seed: int = 0) -> InteractionModel:
    torch.manual_seed(seed)
    return InteractionModel(cfg).eval()


def make_batch(cfg: ModelConfig, B: int, T: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A random but well-formed batch: out rows are k word tokens, <eot>, then <pad>s."""
    L, V = cfg.layout, cfg.vocab_size
    g = torch.Generator().manual_seed(seed)
    out = torch.full((B, T, L.n_out), PAD, dtype=torch.long)
    k = torch.randint(0, L.n_out, (B, T), generator=g)
    words = torch.randint(len(SPECIALS), V, (B, T, L.n_out), generator=g)
    for b in range(B):
        for t in range(T):
            out[b, t, : k[b, t]] = words[b, t, : k[b, t]]
            out[b, t, k[b, t]] = EOT
    return {"clock": torch.arange(T).expand(B, T).clone(),
            "audio": torch.randint(0, 16, (B, T, L.n_audio, L.frames_per_token, 80), generator=g).to(torch.uint8),
            "video": torch.randint(0, 256, (B, T, L.video_size, L.video_size, 3), generator=g).to(torch.uint8),
            "video_on": torch.rand(B, T, generator=g) > 0.3,
            "text_in": torch.randint(0, V, (B, T, L.n_text_in), generator=g),
            "out": out,
            "listen": torch.randint(0, V, (B, T, L.n_audio), generator=g),
            "mel": torch.rand(B, T, L.frames, 80, generator=g) * 9 - 7,
            "valid": torch.ones(B, T, dtype=torch.bool)}


def inputs_at(batch, t, rows=slice(None)):
    return tuple(batch[k][rows, t] for k in ("audio", "video", "video_on", "text_in"))


def stream(model, batch, **kw):
    """Step a whole batch through, teacher-forcing its out tokens; returns the StepOutputs."""
    B, T = batch["clock"].shape
    state = model.new_state(B)
    return [model.step(state, *inputs_at(batch, t), forced_out=batch["out"][:, t], **kw) for t in range(T)]


def assert_matches_forward(model, outs, batch, rows=slice(None), atol=1e-4):
    """Each StepOutput of ``outs`` equals the teacher-forced training forward of ``batch`` (whose out tokens are
    what was written): the text logits of every slot up to the <eot> (none after it), what the model hears, and
    the state the mel is generated from."""
    L = model.layout
    with torch.no_grad():
        h = model.hidden(batch)
        cond = model.flow_condition(h, batch["out"])
    for t, o in enumerate(outs):
        want = model.text_logits(h[:, t, L.n_in - 1 : L.n_in - 1 + L.n_out])
        upto = (torch.arange(L.n_out) <= (batch["out"][:, t] == EOT).int().argmax(-1)[:, None])[..., None]
        msg = lambda m: f"micro-turn {t}: {m}"  # noqa: E731
        torch.testing.assert_close(o.text_logits[rows], want * upto, atol=atol, rtol=0, msg=msg)
        torch.testing.assert_close(model.listen(o.heard[rows]), model.listen(h[:, t, 1 : 1 + L.n_audio]), atol=atol,
                                   rtol=0, msg=msg)
        torch.testing.assert_close(o.cond[rows], cond[:, t], atol=atol, rtol=0, msg=msg)


# ------------------------------------------------------------------------------------ streaming == training
@pytest.mark.parametrize("kw,T", [(dict(), 8), (dict(), 20), (dict(window=1024, pinned=0), 6),
                                  (dict(n_experts=4, top_k=2), 8), (dict(audio_conv=3), 8), (dict(depth=5), 8)],
                         ids=["window-wraps", "window-wraps-twice", "no-window", "moe", "audio-conv", "depth-5"])
def test_step_equals_training_forward(kw, T):
    cfg = tiny(**kw)
    model = build(cfg)
    if cfg.audio_conv:  # its branches start at zero: give them weights, so the frames before a token count
        with torch.no_grad():
            for c in model.embed.audio.conv.convs:
                c.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(c.dilation[0]))
    batch = make_batch(cfg, 2, T)
    L = cfg.layout
    assert T * L.length > cfg.pinned + cfg.window or cfg.window > T * L.length  # which path is under test
    outs = stream(model, batch, generate_audio=False)
    assert_matches_forward(model, outs, batch)
    for t, o in enumerate(outs):
        assert torch.equal(o.out, batch["out"][:, t])
        assert o.mel is None


def stream_heard(model, batch):
    """``stream``, also returning the words each micro-turn read back [B, T, n_audio]."""
    B, T = batch["clock"].shape
    state = model.new_state(B)
    outs, fed = [], []
    for t in range(T):
        fed.append(state.heard.clone())
        outs.append(model.step(state, *inputs_at(batch, t), forced_out=batch["out"][:, t], generate_audio=False))
    return outs, torch.stack(fed, 1)


def test_hear_back_reads_the_words_heard_a_micro_turn_before():
    """A hear_back model reads back, at each audio token, the listening head's likeliest word for the same token of
    the micro-turn before (<sil> at the start); given those words the training forward computes what streaming did.
    Its map starts at zero: the model then computes what the same weights without it do, and ``heard_back`` (what
    teacher forcing reads back when not told) is exactly what streaming fed."""
    cfg = tiny(hear_back=True)
    model = build(cfg)
    plain = build(tiny())
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected == ["embed.heard.weight"]
    batch = make_batch(cfg, 2, 9, seed=4)
    outs, fed = stream_heard(model, batch)
    assert (fed[:, 0] == SIL).all()
    for t in range(1, 9):
        assert torch.equal(fed[:, t], model.listen(outs[t - 1].heard).argmax(-1))
    assert (fed != SIL).any()
    assert torch.equal(model.heard_back(batch), fed)
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(batch), plain.hidden(batch), atol=0, rtol=0)
    with torch.no_grad():
        model.embed.heard.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    outs, fed = stream_heard(model, batch)
    assert_matches_forward(model, outs, batch | {"heard": fed})
    with torch.no_grad():  # the words read back now count: other words, other states
        assert not torch.allclose(model.hidden(batch | {"heard": torch.full_like(fed, SIL)}),
                                  model.hidden(batch | {"heard": fed}))
    with pytest.raises(ValueError, match="hear_back"):
        model.embed.inputs(*(batch[k] for k in ("clock", "audio", "video", "video_on", "text_in")))


def test_a_word_heard_back_is_added_at_the_audio_tokens_scale():
    """The heard word is mapped from its unit embedding and scaled by the audio token's norm, so a map of ordinary
    size is heard over audio embeddings of any size (runs/s44-s46 read back nothing at the text table's scale):
    with the identity map the word adds a vector as long as the audio token, whatever the audio's scale."""
    cfg = tiny(hear_back=True)
    model = build(cfg)
    batch = make_batch(cfg, 2, 3, seed=5)
    keys = ("clock", "audio", "video", "video_on", "text_in")
    with torch.no_grad():
        model.embed.heard.weight.copy_(torch.eye(cfg.d_model))
        for scale in (1.0, 100.0):
            model.embed.audio.token.weight.mul_(scale)
            model.embed.audio.token.bias.mul_(scale)
            a = model.embed.audio(batch["audio"])
            heard = torch.full(a.shape[:-1], 7, dtype=torch.long)
            x = model.embed.inputs(*(batch[k] for k in keys), heard=heard)
            added = x[:, :, 1 : 1 + cfg.layout.n_audio] - model.embed.slot[1 : 1 + cfg.layout.n_audio] - a
            torch.testing.assert_close(added.norm(dim=-1), a.norm(dim=-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("audio_conv", [0, 2])
def test_batched_sessions_with_active_mask(audio_conv):
    """Three sessions stepped as one batch; a row that is inactive on a step must not move (nor its audio
    front-end's past frames). Each row equals its own unbatched run (and the training forward of its session)."""
    cfg = tiny(audio_conv=audio_conv)
    model = build(cfg)
    for c in model.embed.audio.conv.convs if audio_conv else []:
        with torch.no_grad():
            c.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(c.dilation[0]))
    active = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                           [1, 0, 1, 1, 0, 0, 1, 1, 1, 1],
                           [0, 0, 0, 1, 1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    n = active.sum(1).tolist()
    sessions = [make_batch(cfg, 1, n[r], seed=10 + r) for r in range(3)]
    noise = make_batch(cfg, 3, active.shape[1], seed=99)  # what inactive rows are fed: must be ignored
    state = model.new_state(3)
    got = [[] for _ in range(3)]
    k = [0, 0, 0]
    for s in range(active.shape[1]):
        rows = []
        for r in range(3):
            if active[r, s]:  # row r's next micro-turn
                src, t, sel = sessions[r], k[r], slice(0, 1)
            else:  # noise
                src, t, sel = noise, s, slice(r, r + 1)
            rows.append(inputs_at(src, t, sel) + (src["out"][sel, t],))
        audio, video, video_on, text_in, out = (torch.cat(p) for p in zip(*rows))
        o = model.step(state, audio, video, video_on, text_in, active=active[:, s], forced_out=out,
                       generate_audio=False)
        for r in range(3):
            if active[r, s]:
                got[r].append(o)
                k[r] += 1
            else:  # an idle row gets nothing
                assert (o.out[r] == PAD).all() and not o.text_logits[r].any() and not o.cond[r].any()
        assert state.t.tolist() == k and state.tokens.tolist() == [x * cfg.layout.length for x in k]
    for r in range(3):
        assert_matches_forward(model, got[r], sessions[r], rows=slice(r, r + 1))
        alone = stream(model, sessions[r], generate_audio=False)
        for a, b in zip(got[r], alone):
            torch.testing.assert_close(a.cond[r], b.cond[0], atol=1e-4, rtol=0)


def check_out_rows(out: torch.Tensor, n_out: int):
    """Each micro-turn's out: tokens, then exactly one <eot>, then only <pad>s."""
    for row in out.tolist():
        assert len(row) == n_out and row.count(EOT) == 1, row
        e = row.index(EOT)
        assert all(x == PAD for x in row[e + 1 :]), row


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=1.0, top_p=0.9)], ids=["greedy", "top-p"])
def test_free_running_step(sampling):
    """No forced tokens: the model writes valid micro-turns and mel; feeding what it wrote to the training forward
    gives the same hidden states (the early-exit path included)."""
    cfg = tiny()
    model = build(cfg)
    L = cfg.layout
    batch = make_batch(cfg, 2, 7, seed=3)
    state = model.new_state(2)
    g = torch.Generator().manual_seed(0)
    outs = [model.step(state, *inputs_at(batch, t), sampling=sampling, generator=g) for t in range(7)]
    for o in outs:
        check_out_rows(o.out, L.n_out)
        assert o.mel.shape == (2, L.frames, 80) and o.mel.dtype == torch.float32
        assert float(o.mel.min()) >= -7 and float(o.mel.max()) <= 2 and torch.isfinite(o.mel).all()
        assert o.text_logits.shape == (2, L.n_out, cfg.vocab_size)
        assert o.heard.shape == (2, L.n_audio, cfg.d_model)
    assert state.t.tolist() == [7, 7] and state.tokens.tolist() == [7 * L.length] * 2
    assert_matches_forward(model, outs, batch | {"out": torch.stack([o.out for o in outs], 1)})


def test_tied_rows_decide_once_from_their_mean_probabilities():
    """step(tie=K) for one session heard K ways (``Sampling.warps``): each group of K consecutive rows writes the
    same tokens, decided from the mean of its rows' probabilities; only a group's first row runs the flow head; K
    alike rows decide and speak as the row alone does; groups the active rows cut through are refused."""
    cfg = tiny()
    model = build(cfg)
    L = cfg.layout
    batch = make_batch(cfg, 4, 6, seed=3)  # rows 0-1 one session, rows 2-3 another: the rows' inputs all differ
    state = model.new_state(4)
    g = torch.Generator().manual_seed(0)
    outs = [model.step(state, *inputs_at(batch, t), tie=2, generator=g) for t in range(6)]
    own_mind = 0
    for o in outs:
        check_out_rows(o.out, L.n_out)
        assert torch.equal(o.out[0], o.out[1]) and torch.equal(o.out[2], o.out[3])
        assert (o.mel[1::2] == -7).all()  # dmel.LOG_MIN: the second rows are never voiced
        mean = o.text_logits[:, 0].softmax(-1).view(2, 2, -1).mean(1)  # each group's first token
        assert torch.equal(o.out[::2, 0], model_mod.sample(mean.log().masked_fill(model.never_said, float("-inf")),
                                                           Sampling()))
        alone = model_mod.sample(o.text_logits[:, 0].masked_fill(model.never_said, float("-inf")), Sampling())
        own_mind += int((alone != o.out[:, 0]).sum())
    assert own_mind > 0  # some row alone would have decided otherwise: the test tells the mean from one row's mind
    assert state.t.tolist() == [6] * 4

    twice = {k: v[[0, 0]] for k, v in batch.items()}  # one session heard twice the same way: as the row alone
    runs = []
    for b, tie in ((batch, 1), (twice, 2)):
        state, g = model.new_state(len(b["audio"])), torch.Generator().manual_seed(1)
        runs.append([model.step(state, *inputs_at(b, t), tie=tie, generator=g) for t in range(4)])
    for alone, tied in zip(*runs):
        assert torch.equal(tied.out[0], alone.out[0]) and torch.equal(tied.out[1], alone.out[0])
        assert torch.equal(tied.mel[0], alone.mel[0])

    state = model.new_state(4)
    for active in ([True, False, True, True], [False, True, True, False]):
        with pytest.raises(ValueError, match="whole groups of 2"):
            model.step(state, *inputs_at(batch, 0), active=torch.tensor(active), tie=2)


def test_sampling_warps_are_checked():
    assert Sampling(warps=[0.9, 1, 1.1]).warps == (0.9, 1.0, 1.1)
    for bad in ([0.3], [1.0, 2.5], ["fast"], 1.0):
        with pytest.raises(ValueError, match="warps"):
            Sampling(warps=bad)


def test_silence_and_early_exit(monkeypatch):
    """A scripted sampler: in micro-turn 0 row 0 is silent (<eot> first) while row 1 says a word as long as the
    budget allows (only the rows still writing are sampled, and the last slot is <eot> without a draw); then both
    are silent: one forward call per micro-turn (the tails go in with the next inputs). Out rows are well formed,
    and the streaming state matches the training forward of what was written."""
    cfg = tiny()
    model = build(cfg)
    L = cfg.layout
    word = [100 + i for i in range(L.n_out - 1)]
    script = [torch.tensor([EOT, word[0]])] + [torch.tensor([w]) for w in word[1:]] + [torch.tensor([EOT, EOT])] * 2
    calls = []

    def scripted(logits, s, generator=None, silent=None):
        calls.append(tuple(logits.shape))
        return script[len(calls) - 1]

    monkeypatch.setattr(model_mod, "sample", scripted)
    batch = make_batch(cfg, 2, 3, seed=4)
    state = model.new_state(2)
    forwards = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda st, x, rows: forwards.append(len(rows)) or run(st, x, rows))
    outs = [model.step(state, *inputs_at(batch, t), generate_audio=False) for t in range(3)]
    silent = [EOT] + [PAD] * (L.n_out - 1)
    assert outs[0].out.tolist() == [silent, word + [EOT]]  # the last slot is always <eot> (or <pad>)
    assert outs[1].out.tolist() == outs[2].out.tolist() == [silent, silent]
    assert calls == [(2, cfg.vocab_size)] + [(1, cfg.vocab_size)] * (L.n_out - 2) + [(2, cfg.vocab_size)] * 2
    # micro-turn 0: both rows' inputs, then row 1's words; micro-turn 1: the two rows' tails differ in length
    # (two calls); micro-turn 2: one call for both
    assert forwards == [2] + [1] * (L.n_out - 1) + [1, 1] + [2]
    check_out_rows(torch.cat([o.out for o in outs]), L.n_out)
    assert_matches_forward(model, outs, batch | {"out": torch.stack([o.out for o in outs], 1)})
    assert not outs[1].text_logits[:, 1:].any()  # slots after an <eot> are not computed
    assert state.tokens.tolist() == [3 * L.length] * 2 and state.length.tolist() == [3 * L.length - L.n_out] * 2


def test_flow_head_runs_only_while_the_agent_speaks():
    """Row 0 says a word in micro-turn 0 and is silent after; row 1 says nothing throughout: it writes a note, then
    counts down a timer. The flow head generates row 0's windows until SPEECH_TAIL micro-turns after the word, and
    nothing for row 1, whose windows are silence."""
    from microturn.codecs import dmel
    from microturn.model.model import SPEECH_TAIL
    from microturn.stream.tokenizer import NOTE, timer

    cfg = tiny()
    model = build(cfg)
    word = len(SPECIALS) + 100
    forced = torch.full((2, cfg.layout.n_out), PAD)
    forced[:, 0] = EOT
    forced[1, :2] = torch.tensor([timer(7), EOT])
    first = forced.clone()
    first[0, :2] = torch.tensor([word, EOT])
    first[1, :3] = torch.tensor([timer(8), NOTE, EOT])  # a note whose word follows the next micro-turn's timer
    second = forced.clone()
    second[1, :3] = torch.tensor([timer(7), word, EOT])
    n_turns = SPEECH_TAIL + 2
    batch = make_batch(cfg, 2, n_turns, seed=6)
    state = model.new_state(2)
    sampled = []
    sample = model.flow.sample
    model.flow.sample = lambda cond, *a: sampled.append(len(cond)) or sample(cond, *a)
    outs = [model.step(state, *inputs_at(batch, t), forced_out=[first, second][t] if t < 2 else forced,
                       generator=torch.Generator().manual_seed(0)) for t in range(n_turns)]
    assert sampled == [1] * SPEECH_TAIL  # row 0 from its word on, while its audio may last; row 1 never
    for t, o in enumerate(outs):
        assert (o.mel[1] == dmel.LOG_MIN).all()
        assert (o.mel[0] == dmel.LOG_MIN).all() == (t >= SPEECH_TAIL)
    assert state.quiet.tolist() == [SPEECH_TAIL] * 2
    state.reset(torch.tensor([True, False]))
    assert state.quiet.tolist() == [SPEECH_TAIL] * 2


def test_heard_and_noted_words_are_not_said():
    """The step's rule for what was said (it runs the flow head), the decoder's: a word after <note> is written, not
    said, also over the next micro-turn's timer; a heard token is silent and the word after it is said; a
    delegation's query is not said, over micro-turns, and the word after </dlg> is."""
    from types import SimpleNamespace

    from microturn.model.model import InteractionModel
    from microturn.stream.layout import Layout, OutputDecoder
    from microturn.stream.tokenizer import DLG, DLG_END, NOTE, default_tokenizer, heard, timer

    word = len(SPECIALS) + 100
    rows = torch.arange(6)
    state = SimpleNamespace(noting=torch.zeros(6, dtype=torch.bool), asking=torch.zeros(6, dtype=torch.bool))
    turns = [torch.tensor([[heard("tiger"), word, EOT], [NOTE, word, EOT], [word, EOT, PAD], [timer(3), NOTE, EOT],
                           [heard("pencil"), EOT, PAD], [DLG, word, word]]),
             torch.tensor([[word, EOT, PAD], [EOT, PAD, PAD], [EOT, PAD, PAD], [timer(2), word, EOT],
                           [NOTE, heard("tiger"), EOT], [word, DLG_END, EOT]]),
             torch.tensor([[EOT, PAD, PAD]] * 5 + [[word, EOT, PAD]])]
    said = [InteractionModel._said(state, toks, rows).tolist() for toks in turns]
    assert said == [[True, False, True, False, False, False], [True, False, False, False, False, False],
                    [False, False, False, False, False, True]]
    for r in range(6):  # the decoder agrees, micro-turn by micro-turn
        dec = OutputDecoder(Layout(), default_tokenizer())
        for t, toks in enumerate(turns):
            dec.push(toks[r].numpy())
            assert bool(dec.said) == said[t][r], (r, t)


def test_state_reset_starts_over():
    cfg = tiny()
    model = build(cfg)
    batch = make_batch(cfg, 2, 7, seed=5)
    state = model.new_state(2)

    def run(sampling, active=None):
        g = torch.Generator().manual_seed(7)
        return [model.step(state, *inputs_at(batch, t), sampling=sampling, generator=g, active=active)
                for t in range(7)]

    hot = Sampling(temperature=1.0)
    first = run(hot)
    state.reset()
    assert state.t.tolist() == [0, 0] and state.length.tolist() == [0, 0] and (state.cache.pos == -1).all()
    again = run(hot)
    for a, b in zip(first, again):
        assert torch.equal(a.out, b.out) and torch.equal(a.mel, b.mel)
        torch.testing.assert_close(a.cond, b.cond, atol=1e-6, rtol=0)
    # Reset one row only: it starts over while the other keeps its session (and is left alone: inactive).
    state.reset()
    greedy = run(Sampling())
    state.reset(torch.tensor([False, True]))
    assert state.t.tolist() == [7, 0] and state.tokens.tolist() == [7 * cfg.layout.length, 0]
    redo = run(Sampling(), active=torch.tensor([False, True]))
    for a, b in zip(greedy, redo):
        assert torch.equal(a.out[1], b.out[1])
        torch.testing.assert_close(b.cond[1], a.cond[1], atol=1e-5, rtol=0)
    assert state.t.tolist() == [7, 7]


# ------------------------------------------------------------------------------------------------------- MoE
def test_moe_routes_to_every_expert_and_is_balanced_at_init():
    cfg = tiny(n_experts=4, top_k=2)
    model = build(cfg)
    counts = torch.zeros(cfg.n_layer, cfg.n_experts, dtype=torch.long)
    hooks = []

    def count(i, e):
        def hook(module, inp, out):
            counts[i, e] += inp[0].shape[0]  # tokens routed to expert e of layer i (returns None: output kept)
        return hook

    for i, block in enumerate(model.transformer.blocks):
        assert isinstance(block.mlp, MoE)
        for e, expert in enumerate(block.mlp.experts):
            hooks.append(expert.register_forward_hook(count(i, e)))
    batch = make_batch(cfg, 2, 4, seed=6)
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    n_tokens = 2 * 4 * cfg.layout.length
    assert (counts > 0).all(), counts
    assert (counts.sum(1) == cfg.top_k * n_tokens).all()  # every token goes to exactly top_k experts
    moe = losses["moe"].detach()
    assert torch.isfinite(moe) and moe.shape == ()
    assert abs(float(moe) - 1.0) < 0.05, float(moe)  # a near-uniform router at init: the loss's minimum, ~1
    assert torch.isfinite(losses["loss"])
    dense = build(tiny())(batch, generator=torch.Generator().manual_seed(0))
    assert float(dense["moe"]) == 0.0


def test_in_training_unused_experts_and_hmlp_get_zero_gradients():
    """A batch without video frames, and a router that sends every token elsewhere: in training the hMLP and the idle
    expert still take part, with zero gradients (a sharded run reduces the same gradients on every rank); in
    evaluation they are skipped, and the outputs are the same either way."""
    cfg = tiny(n_experts=4, top_k=2)
    model = build(cfg)
    for block in model.transformer.blocks:  # expert 0 never chosen
        block.mlp.router.register_forward_hook(lambda m, i, o: o.index_fill(-1, torch.tensor([0]), -1e4))
    batch = make_batch(cfg, 2, 3) | {"video_on": torch.zeros(2, 3, dtype=torch.bool)}
    gen = torch.Generator()
    ev = model(batch, generator=gen.manual_seed(0))["loss"]
    model.train()
    loss = model(batch, generator=gen.manual_seed(0))["loss"]
    assert torch.allclose(loss, ev)
    loss.backward()
    idle = [p.grad for b in model.transformer.blocks for p in b.mlp.experts[0].parameters()]
    hmlp = [p.grad for p in model.embed.video.parameters()]
    assert all(g is not None and not g.any() for g in idle + hmlp)


def test_moe_balance_loss_decreases():
    """An MoE whose router favours one expert: optimising the load-balancing loss spreads the tokens."""
    cfg = tiny(n_experts=4, top_k=2)
    torch.manual_seed(0)
    moe = MoE(cfg)
    x = torch.randn(256, cfg.d_model) + 2.0 * torch.randn(cfg.d_model)  # a shared direction, like real states
    m = x.mean(0)
    with torch.no_grad():
        moe.router.weight[0] = 3.0 * m / m.pow(2).sum()  # expert 0 is in (almost) every token's top-k
    opt = torch.optim.Adam(moe.router.parameters(), lr=1e-3)
    hist, load = [], []
    for _ in range(40):
        moe(x)
        hist.append(float(moe.aux_loss.detach()))
        load.append(float((moe.router(x).topk(cfg.top_k, -1).indices == 0).any(-1).float().mean()))
        opt.zero_grad()
        moe.aux_loss.backward()
        opt.step()
    assert hist[0] > 1.5 and hist[-1] < 1.1, hist  # ~1 is the balanced minimum
    assert all(b < a + 0.05 for a, b in zip(hist, hist[1:])), hist  # going down all the way
    assert load[0] > 0.95 and load[-1] < 0.8, load  # expert 0 no longer takes every token


def test_recap_weight_scales_the_marked_tokens():
    """Out tokens a batch marks as recaps weigh ``speak_weight * recap_weight``; the rest are unchanged."""
    cfg = tiny()
    model = build(cfg, seed=2).eval()
    batch = make_batch(cfg, 2, 5, seed=9)
    loss = lambda b, **kw: model(b, generator=torch.Generator().manual_seed(0), **kw)["text"]  # noqa: E731
    plain = loss(batch, speak_weight=1.0)
    every = batch | {"recap": batch["out"] != EOT}
    torch.testing.assert_close(loss(every, speak_weight=2.0, recap_weight=0.5), plain)
    assert not torch.allclose(loss(every, speak_weight=2.0, recap_weight=1.0), plain)
    none = batch | {"recap": torch.zeros_like(batch["out"], dtype=torch.bool)}
    torch.testing.assert_close(loss(none, speak_weight=1.0, recap_weight=0.1), plain)


def test_listen_scale_weighs_the_listening_losses_in_the_loss():
    """``loss`` = text + listen_scale * (listen + listen_early) + flow (+ the MoE's): the scale moves the listening
    losses alone, the early tap's with the head's, and 0.5 is the default."""
    cfg = tiny()
    model = build(cfg, seed=3).eval()
    batch = make_batch(cfg, 2, 5, seed=4)
    run = lambda **kw: model(batch, generator=torch.Generator().manual_seed(0), early_listen=1, **kw)  # noqa: E731
    plain = run()
    listening = plain["listen"].mean() + plain["listen_early"].mean()
    assert listening > 0
    for s in (0.0, 0.5, 2.0):
        r = run(listen_scale=s)
        torch.testing.assert_close(r["loss"], plain["loss"] + (s - 0.5) * listening)
        torch.testing.assert_close(r["text"], plain["text"])
        torch.testing.assert_close(r["listen"], plain["listen"])


def test_listen_weight_weighs_each_listening_target_by_its_token():
    """The listening loss per session is the mean of the targets' cross entropies weighted by ``listen_weight``
    [vocab]: uniform weights change nothing, others weigh the chosen tokens up."""
    cfg = tiny()
    model = build(cfg, seed=3).eval()
    batch = make_batch(cfg, 2, 5, seed=4)
    run = lambda **kw: model(batch, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    plain = run()
    torch.testing.assert_close(run(listen_weight=torch.full((cfg.vocab_size,), 2.5))["listen"], plain["listen"])
    w = torch.ones(cfg.vocab_size)
    w[batch["listen"][0, 0, 0]] = 4.0  # weigh up one token the first session hears
    got = run(listen_weight=w)["listen"]
    ce = torch.nn.functional.cross_entropy(plain["listen_logits"].flatten(0, 2), batch["listen"].flatten(),
                                           reduction="none").view_as(batch["listen"])  # [B, T, n_audio]
    tw = w[batch["listen"]]
    torch.testing.assert_close(got, (ce * tw).sum((1, 2)) / tw.sum((1, 2)))
    assert not torch.allclose(got, plain["listen"])


def test_early_listen_trains_the_lower_blocks_only():
    """``early_listen=k`` reads the listening head off the audio tokens after the first k blocks: the same final
    states, a tapped state that is the final norm of block k's output, and a loss whose gradient reaches blocks
    1 .. k (and the embeddings) but none above them."""
    cfg = tiny(depth=3)
    model = build(cfg, seed=3).train()
    batch = make_batch(cfg, 2, 4, seed=5)
    final, early = model.hidden(batch, tap=2)
    torch.testing.assert_close(final, model.hidden(batch))
    x = model.embed(*(batch[k] for k in model_mod.INPUT_KEYS), batch["out"])
    B, T, L, d = x.shape
    h, pos = x.reshape(B, T * L, d), torch.arange(T * L).expand(B, -1)
    ctx = Context(*rope(pos, cfg.head_dim), None)
    for i, blk in enumerate(model.transformer.blocks[:2]):
        h = blk(h, ctx, i)
    torch.testing.assert_close(early, model.transformer.norm(h).view(B, T, L, d))

    r = model(batch, early_listen=2, generator=torch.Generator().manual_seed(0))
    assert r["listen_early"].shape == r["listen"].shape and bool((r["listen_early"] > 0).all())
    plain = model(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r["loss"], plain["loss"] + 0.5 * r["listen_early"].mean())
    assert float(plain["listen_early"].abs().sum()) == 0.0 and "listen_early_logits" not in plain
    model.zero_grad()
    r["listen_early"].mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None or not grads[n].any() for n in grads if n.startswith("transformer.blocks.2."))
    assert all(grads[n] is not None and grads[n].any() for n in grads
               if n.startswith(("transformer.blocks.0.attn", "transformer.blocks.1.mlp", "listen.", "embed.audio")))
    with pytest.raises(ValueError, match="tap must be in 1 .. 3"):
        model(batch, early_listen=4)


# ---------------------------------------------------------------------------------------------------- golden
def golden_losses() -> dict:
    """Losses of fixed tiny models on a fixed batch (seeds fixed, deterministic algorithms)."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        res = {}
        for name, kw in (("dense", {}), ("moe", dict(n_experts=4, top_k=2))):
            cfg = tiny(**kw)
            model = build(cfg, seed=1234).train()
            with torch.no_grad():  # the flow head starts at zero velocity: give it weights so its input counts
                model.flow.out.weight.copy_(torch.randn(model.flow.out.weight.shape,
                                                        generator=torch.Generator().manual_seed(5)) * 0.02)
            batch = make_batch(cfg, 2, 5, seed=4321)
            with torch.no_grad():
                losses = model(batch, speak_weight=2.0, generator=torch.Generator().manual_seed(77))
            res[name] = {k: [float(x) for x in losses[k].reshape(-1)] for k in ("loss", "text", "listen", "flow", "moe")}
        return res
    finally:
        torch.use_deterministic_algorithms(prev)


def test_golden_losses():
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing: generate it with `.venv/bin/python {Path(__file__).name}`")
    want = json.loads(GOLDEN.read_text())
    got = golden_losses()
    for name, losses in want["losses"].items():
        for k, v in losses.items():
            np.testing.assert_allclose(got[name][k], v, rtol=1e-4, atol=1e-7,
                                       err_msg=f"{name} {k} loss moved from the golden value; if the change to the "
                                               f"model (or its init, or the layout) is intended, regenerate with "
                                               f"`.venv/bin/python tests/test_model.py`")


# ----------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    cfg = tiny(n_experts=4, top_k=2)
    model = build(cfg, seed=3)
    folder = checkpoint.save(model, tmp_path / "ckpt", extra={"step": 12, "train": {"lr": 1e-3}})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "microturn-model" and meta["version"] == 1 and meta["extra"]["step"] == 12
    assert checkpoint.read_config(folder) == (cfg, meta["extra"]) and len(meta["save_id"]) == 32
    loaded = checkpoint.load(folder)
    assert loaded.cfg == cfg and not loaded.training and loaded.checkpoint_info["step"] == 12
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    batch = make_batch(cfg, 1, 3, seed=8)
    l1 = model(batch, generator=torch.Generator().manual_seed(0))
    l2 = loaded(batch, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(l1[k], l2[k]) for k in l1)
    o1 = stream(model, batch, generator=torch.Generator().manual_seed(0))
    o2 = stream(loaded, batch, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a.cond, b.cond) and torch.equal(a.mel, b.mel) for a, b in zip(o1, o2))
    # Also by the path of a file inside the folder, and saving a wrapped (DDP-like) model.
    assert checkpoint.load(folder / "model.safetensors").cfg == cfg

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    checkpoint.save(Wrapper(model), tmp_path / "wrapped")
    assert checkpoint.load(tmp_path / "wrapped").cfg == cfg


def test_checkpoint_errors(tmp_path):
    cfg = tiny()
    folder = checkpoint.save(build(cfg), tmp_path / "good")
    meta = json.loads((folder / "config.json").read_text())

    def variant(name, config_text=None, weights=True):
        d = tmp_path / name
        d.mkdir()
        if weights:
            (d / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        if config_text is not None:
            (d / "config.json").write_text(config_text)
        return d

    def fails(d, *patterns):
        with pytest.raises(CheckpointError) as e:
            checkpoint.load(d)
        for p in patterns:
            assert p in str(e.value), f"{p!r} not in {str(e.value)!r}"

    fails(tmp_path / "nowhere", "nowhere", "not found")
    fails(variant("noconfig"), "config.json is missing")
    fails(variant("broken", '{"depth": 2,'), "broken/config.json: malformed JSON")
    fails(variant("list", "[]"), "expected a JSON object")
    fails(variant("format", json.dumps(meta | {"format": "gguf"})), "not a microturn model checkpoint")
    fails(variant("version", json.dumps(meta | {"version": 9})), "unsupported checkpoint version 9")
    fails(variant("unknown", json.dumps(meta | {"n_heads": 4})), "unknown fields: n_heads")
    fails(variant("lacking", json.dumps({k: v for k, v in meta.items() if k != "window"})), "lacks fields: window")
    fails(variant("badlayout", json.dumps(meta | {"layout": meta["layout"] | {"delta": 0.13}})),
          "bad model config", "delta 0.13")
    fails(variant("strdepth", json.dumps(meta | {"depth": "2"})), "depth must be a non-negative integer")
    fails(variant("noweights", json.dumps(meta), weights=False), "model.safetensors is missing")
    junk = variant("junk", json.dumps(meta), weights=False)
    (junk / "model.safetensors").write_bytes(b"\x00" * 64)
    fails(junk, "cannot read the weights")
    d_model = cfg.d_model
    fails(variant("vocab", json.dumps(meta | {"vocab_size": 301})),
          f"tensor embed.text.weight has shape [300, {d_model}] in the file but the config needs [301, {d_model}]",
          "tensor listen.weight")
    fails(variant("deeper", json.dumps(meta | {"depth": 3})), "missing tensors: transformer.blocks.2.")
    # compared by shape before any weight is made: a config that would need terabytes is said, not allocated (depth
    # 1,000: 200 TB in float32; session 58: 100,000 took 6 min to build even on the meta device)
    fails(variant("huge", json.dumps(meta | {"depth": 1_000})), "depth 1000", "missing tensors")
    fails(variant("moe", json.dumps(meta | {"n_experts": 2})), "missing tensors:", "unexpected tensors:",
          "transformer.blocks.0.mlp.up.weight")
    fails(variant("conv", json.dumps(meta | {"audio_conv": 1})), "missing tensors: embed.audio.conv.convs.0.")
    fails(variant("badconv", json.dumps(meta | {"audio_conv": -1})), "audio_conv must be a non-negative integer")
    fails(variant("fpt0", json.dumps(meta | {"layout": meta["layout"] | {"frames_per_token": 0}})),
          "bad model config", "frames_per_token must be a whole number")
    fails(variant("sampling", json.dumps(meta | {"extra": {"sampling": {"top_k": 5}}})), "extra.sampling", "top_k")
    other = checkpoint.save(build(cfg), tmp_path / "other")  # the same model saved again: another save
    fails(variant("mixed", (other / "config.json").read_text()), "two different saves")
    nan = build(cfg)
    with torch.no_grad():
        nan.listen.weight[0, 0] = float("nan")
    fails(checkpoint.save(nan, tmp_path / "nan"), "not finite", "listen.weight")
    # a field added after version 1 may be absent: written before it, the checkpoint means its old value
    older = checkpoint.load(variant("older", json.dumps({k: v for k, v in meta.items() if k != "audio_conv"})))
    assert older.cfg.audio_conv == 0
    if not (checkpoint.DEFAULT_CHECKPOINT / "config.json").exists():
        with pytest.raises(CheckpointError, match="no bundled model"):
            checkpoint.load_default()
    assert checkpoint.DEFAULT_CHECKPOINT.name == "model" and checkpoint.DEFAULT_CHECKPOINT.parent.name == "assets"


def test_the_bundled_model_fits_in_the_repository():
    """The bundled checkpoint ships in git: under 25 MB (decimal) in all, its weights in the 16-bit type its config
    names."""
    from safetensors import safe_open

    files = list(checkpoint.DEFAULT_CHECKPOINT.iterdir())
    assert files and sum(f.stat().st_size for f in files) < 25_000_000
    stored = json.loads((checkpoint.DEFAULT_CHECKPOINT / "config.json").read_text())["extra"]["stored_as"]
    assert stored in ("float16", "bfloat16")
    with safe_open(str(checkpoint.DEFAULT_CHECKPOINT / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16" if stored == "float16" else "BF16"}


def test_16_bit_weights_load_close_and_overflow_is_refused(tmp_path):
    """float16 (what `microturn model bundle` stores by default) keeps more of each weight than bfloat16, and a
    weight beyond its range is refused, never written as infinity."""
    model = build(tiny(), seed=3)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    err = {}
    for dt in (torch.float16, torch.bfloat16):
        back = checkpoint.load(checkpoint.save(model, tmp_path / str(dt), dtype=dt)).state_dict()
        err[dt] = max(float((back[k] - ref[k]).abs().max()) for k in ref if ref[k].is_floating_point())
    assert 0 < err[torch.float16] < err[torch.bfloat16] / 4
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6
    with pytest.raises(CheckpointError, match="overflow"):
        checkpoint.save(model, tmp_path / "big", dtype=torch.float16)
    assert not (tmp_path / "big").exists()
    checkpoint.save(model, tmp_path / "wide", dtype=torch.bfloat16)  # bfloat16 holds float32's range


# --------------------------------------------------------------------------------------------- each head learns
def test_each_head_learns_one_batch():
    cfg = tiny()
    model = build(cfg, seed=2).train()
    batch = make_batch(cfg, 2, 4, seed=9)

    def measure():
        with torch.no_grad():
            lo = model(batch, generator=torch.Generator().manual_seed(0))
        return {k: float(lo[k].mean()) for k in ("text", "listen", "flow")}

    before = measure()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(30):
        lo = model(batch, generator=torch.Generator().manual_seed(100 + i))
        opt.zero_grad()
        lo["loss"].backward()
        opt.step()
    after = measure()
    # Text and listening targets can be memorised; the flow loss has an irreducible part (the noise it starts
    # from), so it only has to fall clearly.
    for k, factor in (("text", 0.5), ("listen", 0.5), ("flow", 0.85)):
        assert after[k] < factor * before[k], (k, before, after)


def test_presets_build():
    assert preset("cpu").depth == 4 and preset("cpu-moe").n_experts == 4
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
    m = InteractionModel(preset("cpu"))
    assert 1e6 < m.n_params() < 2e7
    # every depth builds: an odd number of heads cannot pair up for grouped-query attention, so each has its own
    heads = [(c.n_head, c.n_kv_head) for c in (tiny(depth=d) for d in range(1, 8))]
    assert heads == [(2, 1), (2, 1), (3, 3), (4, 2), (5, 5), (6, 3), (7, 7)]


if __name__ == "__main__":
    data = {"about": "losses of tiny microturn models on a fixed batch; regenerate with python tests/test_model.py",
            "torch": torch.__version__, "config": tiny().to_json(), "losses": golden_losses()}
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    print(json.dumps(data["losses"], indent=1))


def test_speak_threshold_decides_on_the_words_total_mass():
    """Greedy decoding speaks when the words together outweigh <eot> by the threshold, even if no single word
    beats <eot>; then it says the likeliest word."""
    V = 10
    logits = torch.full((3, V), -30.0)
    logits[0, EOT], logits[0, 7], logits[0, 8] = 0.0, -0.2, -0.3  # <eot> 0.36: words 0.64 together
    logits[1, EOT], logits[1, 7] = 0.0, -3.0  # <eot> 0.95
    logits[2, EOT], logits[2, 7] = -3.0, 0.0  # words 0.95
    assert model_mod.sample(logits, Sampling()).tolist() == [7, EOT, 7]
    assert model_mod.sample(logits, Sampling(speak_threshold=0.7)).tolist() == [EOT, EOT, 7]
    assert logits[0].argmax() == EOT  # plain argmax would have stayed silent


def test_doubt_memory_speaks_once_consecutive_doubts_would_have(monkeypatch):
    """Sampling.doubt_floor: while the agent is quiet, micro-turns in doubt (speak probability p at least the floor)
    combine into 1 - prod(1 - p), and greedy decoding speaks once that passes the threshold; a micro-turn under the
    floor forgets them, so do words said and a reset. Without the floor each micro-turn decides alone, and sampling
    at a temperature keeps no memory (its draws are the chance itself)."""
    cfg = tiny()
    model = build(cfg)
    p = [0.0]
    word = len(SPECIALS) + 5

    def logits(h):  # every slot: a word with probability p[0], else <eot>
        out = torch.full((h.shape[0], cfg.vocab_size), -1e4)
        out[:, EOT], out[:, word] = math.log(1 - p[0]), math.log(p[0])
        return out

    monkeypatch.setattr(model, "text_logits", logits)
    batch = make_batch(cfg, 1, 12, seed=2)

    def run(ps, sampling, state=None):
        state = state or model.new_state(1)
        first = []
        for t, q in enumerate(ps):
            p[0] = q
            first.append(int(model.step(state, *inputs_at(batch, t), sampling=sampling, generate_audio=False).out[0, 0]))
        return ["w" if x == word else "." for x in first], state

    memory = Sampling(doubt_floor=0.2)
    # 0.3 alone stays silent; 0.3 then 0.3 is 1 - 0.7 * 0.7 = 0.51; a 0.1 between them forgets the first
    assert run([0.3, 0.1, 0.3, 0.3], memory)[0] == [".", ".", ".", "w"]
    assert run([0.3, 0.1, 0.3, 0.3], Sampling())[0] == [".", ".", ".", "."]
    assert run([0.3, 0.3], Sampling(doubt_floor=0.2, speak_threshold=0.6))[0] == [".", "."]  # 0.51 < 0.6
    assert run([0.15, 0.15, 0.15, 0.15], memory)[0] == ["."] * 4  # under the floor: no doubt at all
    # after a word, the agent's audio is not over for SPEECH_TAIL micro-turns: no memory then (stopping is not
    # outweighed by doubts), and the first quiet micro-turn starts afresh
    said, state = run([0.9] + [0.3] * (model_mod.SPEECH_TAIL + 2), memory)
    assert said == ["w"] + ["."] * model_mod.SPEECH_TAIL + [".", "w"]
    _, state = run([0.3], memory)
    assert state.doubt.tolist() == pytest.approx([0.7])
    state.reset()
    assert state.doubt.tolist() == [1.0]
    _, state = run([0.3, 0.3], Sampling(doubt_floor=0.2, temperature=1.0))
    assert state.doubt.tolist() == [1.0]
    # a session heard through two vocal tracts (tie=2): its rows remember one doubt and speak together
    pair, state = make_batch(cfg, 2, 2, seed=3), model.new_state(2)
    outs = []
    for t in range(2):
        p[0] = 0.3
        outs.append(model.step(state, *inputs_at(pair, t), sampling=memory, generate_audio=False, tie=2).out[:, 0])
        assert state.doubt.tolist() == pytest.approx([0.7, 0.7] if t == 0 else [1.0, 1.0])
    assert outs[0].tolist() == [EOT, EOT] and outs[1].tolist() == [word, word]


def test_sampling_comes_with_the_checkpoint(tmp_path):
    model = build(tiny())
    checkpoint.save(model, tmp_path / "m", extra={"sampling": {"speak_threshold": 0.3}})
    loaded = checkpoint.load(tmp_path / "m")
    assert Sampling.of(loaded).speak_threshold == 0.3 and Sampling.of(model).speak_threshold == 0.5
    assert Sampling.of(loaded, speak_threshold=0.6, temperature=1.0) == Sampling(temperature=1.0, speak_threshold=0.6)


@pytest.mark.parametrize("bad", [dict(speak_threshold=1.0), dict(speak_threshold=-0.1), dict(temperature=-1),
                                 dict(top_p=0), dict(flow_steps=0), dict(doubt_floor=0.0), dict(doubt_floor=1.0)])
def test_sampling_rejects_out_of_range_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Sampling(**bad)


def test_average_checkpoints_mixes_the_weights_and_counts_a_missing_front_end_as_zero(tmp_path, monkeypatch):
    """scripts/average_checkpoints.py: each weight is the weighted mean; a checkpoint without the audio front-end,
    or with fewer of its layers, counts as zeros there (its branches start at zero); other architectures are
    refused. The soup written keeps each checkpoint's own ``extra`` (where its weights came from)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import average_checkpoints

    a, m, b = build(tiny(), seed=0), build(tiny(audio_conv=1), seed=2), build(tiny(audio_conv=2), seed=1)
    for p in [*m.embed.audio.conv.parameters(), *b.embed.audio.conv.parameters()]:
        torch.nn.init.normal_(p)
    for name, x in (("a", a), ("m", m), ("b", b)):
        checkpoint.save(x, tmp_path / name)
    soup = average_checkpoints.average([str(tmp_path / n) for n in "amb"], [0.25, 0.15, 0.6])
    sa, sm, sb, ss = a.state_dict(), m.state_dict(), b.state_dict(), soup.state_dict()
    assert soup.cfg.audio_conv == 2 and "embed.audio.conv.convs.1.weight" not in sm
    for k, v in ss.items():
        want = 0.6 * sb[k] + (0.25 * sa[k] if k in sa else 0) + (0.15 * sm[k] if k in sm else 0)
        torch.testing.assert_close(v, want)
    checkpoint.save(build(tiny(depth=3)), tmp_path / "c")
    with pytest.raises(SystemExit, match="architecture"):
        average_checkpoints.average([str(tmp_path / "a"), str(tmp_path / "c")], [0.5, 0.5])
    with pytest.raises(SystemExit, match="sum to 1"):
        average_checkpoints.average([str(tmp_path / "a"), str(tmp_path / "b")], [0.5, 0.6])
    checkpoint.save(a, tmp_path / "a", extra={"train": {"seed": 7}})
    monkeypatch.setattr(sys, "argv", ["average_checkpoints.py", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--weights", "0.25,0.75", "--out", str(tmp_path / "soup")])
    average_checkpoints.main()
    soup_extra = checkpoint.read_config(tmp_path / "soup")[1]["soup"]
    assert soup_extra["weights"] == [0.25, 0.75] and soup_extra["sources"] == [{"train": {"seed": 7}}, {}]


def test_grow_vocab_keeps_every_old_row_and_starts_heard_tokens_from_the_two_they_replace(tmp_path):
    """scripts/grow_vocab.py: a checkpoint for a tokenizer with 29 fewer specials (session 13's, ``<heard>`` at id
    157) keeps each old token's rows at its new id; with --heard-from each <heard:w> embedding starts as (<heard> + w)
    / sqrt 2; a vocabulary that does not add up is refused."""
    import math
    import sys

    from microturn.stream.tokenizer import CUE_WORDS, default_tokenizer, heard

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import grow_vocab

    tok = default_tokenizer()
    old_specials, added = 158, len(SPECIALS) - 158
    old = build(tiny(vocab_size=tok.vocab_size - added), seed=3)
    checkpoint.save(old, tmp_path / "old")
    new = grow_vocab.grow(str(tmp_path / "old"), old_specials, heard_from=157)
    so, sn = old.state_dict(), new.state_dict()
    assert new.cfg.vocab_size == tok.vocab_size
    for k in ("embed.text.weight", "listen.weight", "listen.bias"):
        torch.testing.assert_close(sn[k][len(SPECIALS):], so[k][old_specials:])
        torch.testing.assert_close(sn[k][:157], so[k][:157])
    emb, old_emb = sn["embed.text.weight"], so["embed.text.weight"]
    for w in CUE_WORDS:
        want = (old_emb[157] + old_emb[tok.encode_word(w)[0] - added]) / math.sqrt(2)
        torch.testing.assert_close(emb[heard(w)], want)
    assert not torch.equal(emb[heard("apple")], emb[heard("pirate")])
    for k, v in so.items():
        if v.shape[:1] != (old.cfg.vocab_size,):
            torch.testing.assert_close(sn[k], v)
    with pytest.raises(SystemExit, match="new specials"):
        grow_vocab.grow(str(tmp_path / "old"), 150)
    with pytest.raises(SystemExit, match="heard-from"):
        grow_vocab.grow(str(tmp_path / "old"), old_specials, heard_from=400)


@pytest.mark.parametrize("kw,depth", [(dict(), 3), (dict(audio_conv=2, hear_back=True), 4),
                                      (dict(depth=4, n_experts=2, top_k=1), 5)],
                         ids=["2-to-3", "2-to-4-front-end", "4-to-5-moe"])
def test_a_grown_model_computes_what_it_computed_and_learns_its_new_units(kw, depth):
    """``grow`` keeps the outputs (every loss; the hidden states' old dimensions, the new ones zero), and the first
    gradient reaches the weights that write the new dimensions and the new layers' outputs."""
    old = build(tiny(**kw), seed=4)
    with torch.no_grad():  # the weights that start at zero (front-end, hearing back, flow output): give them values
        for n, p in old.named_parameters():
            if not p.abs().sum():
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    new = grow(old, depth, seed=1)
    assert new.cfg == replace(old.cfg, depth=depth) and new.n_params() > old.n_params()
    for m in (old, new):  # the one inexact term: a norm's eps against its input's mean square, which in a trained
        for norm in m.modules():  # stream is ~1e2 against 1e-6 but in this random one ~1e-3
            if isinstance(norm, RMSNorm):
                norm.eps = 0.0
    batch = make_batch(old.cfg, 2, 6, seed=7)
    d0 = old.cfg.d_model
    with torch.no_grad():
        h0, h = old.hidden(batch), new.hidden(batch)
    torch.testing.assert_close(h[..., :d0], h0, atol=1e-4, rtol=1e-4)
    assert float(h[..., d0:].abs().max()) == 0.0
    assert difference(old, new) < 1e-5 < 0.1 < difference(old, build(new.cfg, seed=1))  # the CLI's check
    r0, r = (m(batch, generator=torch.Generator().manual_seed(0)) for m in (old, new))
    for k in ("loss", "text", "listen", "flow"):
        torch.testing.assert_close(r[k], r0[k], atol=1e-4, rtol=1e-4, msg=k)
    new.train().zero_grad()
    new(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
    grads = dict(new.named_parameters())
    last = f"transformer.blocks.{depth - 1}"
    for name in ("transformer.blocks.0.attn.o.weight", "embed.text.weight", f"{last}.attn.o.weight"):
        g = grads[name].grad
        assert g is not None and float(g[..., d0:].abs().sum() if name == "embed.text.weight" else
                                       g[d0:].abs().sum()) > 0, name


def test_grow_refuses_what_it_cannot_grow_exactly():
    with pytest.raises(ValueError, match="deeper than depth 2"):
        grow(build(tiny()), 2)
    with pytest.raises(ValueError, match="cannot grow depth 3 to 4 exactly"):  # heads 0, 1 had kv heads 0, 1
        grow(build(tiny(depth=3)), 4)
    with pytest.raises(ValueError, match="heads are 32 wide"):
        grow(build(tiny(depth=1)), 2)


def test_not_acting_on_a_heard_word_weighs_as_much_as_acting():
    """The text loss weighs the <eot> right after a heard token (the decision not to act on it) like a word, other
    <eot>s at 1: a model that cannot tell a cue from another cue-list word then gains nothing by acting on both."""
    from microturn.model.model import out_weights
    from microturn.stream.tokenizer import heard

    word = len(SPECIALS) + 5
    out = torch.tensor([[heard("tiger"), EOT, PAD], [EOT, PAD, PAD], [heard("pirate"), word, EOT], [word, EOT, PAD]])
    w = out_weights(out, 3.0)
    assert w[:, :2].tolist() == [[3, 3], [1, 3], [3, 3], [3, 1]] and w[2, 2] == 1
    assert out_weights(out[None], 2.0).shape == (1, 4, 3)


def test_model_bundle_stores_float16_with_its_threshold(tmp_path, capsys):
    """`microturn model bundle` writes float16 weights by default (bfloat16 on request), the speak threshold and
    the warps; Sampling.of reads them back, and a bad --warps is refused before anything is written."""
    from microturn.cli import main

    src = checkpoint.save(build(tiny(), seed=4), tmp_path / "src")
    for dtype, args in (("float16", []), ("bfloat16", ["--dtype", "bfloat16"])):
        argv = ["model", "bundle", str(src), "--out", str(tmp_path / dtype), "--speak-threshold", "0.6", *args]
        assert main(argv) == 0
        extra = checkpoint.read_config(tmp_path / dtype)[1]
        assert extra["stored_as"] == dtype and extra["sampling"] == {"speak_threshold": 0.6}
        assert f"weights in {dtype}" in capsys.readouterr().out
    assert checkpoint.load(tmp_path / "float16").state_dict().keys() == checkpoint.load(src).state_dict().keys()
    assert main(["model", "bundle", str(tmp_path / "float16"), "--out", str(tmp_path / "w"),
                 "--warps", "0.9,1,1.1"]) == 0
    assert Sampling.of(checkpoint.load(tmp_path / "w")) == Sampling(speak_threshold=0.6, warps=(0.9, 1.0, 1.1))
    assert main(["model", "bundle", str(tmp_path / "w"), "--out", str(tmp_path / "none"), "--warps", "none"]) == 0
    assert Sampling.of(checkpoint.load(tmp_path / "none")).warps == ()
    for bad in ("0.2", "1,fast"):
        with pytest.raises(SystemExit):
            main(["model", "bundle", str(src), "--out", str(tmp_path / "bad"), "--warps", bad])
        assert "--warps" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_model_grow_writes_a_deeper_checkpoint_and_says_how_close_it_is(tmp_path, capsys):
    from microturn.cli import main

    src = checkpoint.save(build(tiny(), seed=4), tmp_path / "src", extra={"step": 7, "stored_as": "float16"})
    assert main(["model", "grow", str(src), "--depth", "3", "--out", str(tmp_path / "d3")]) == 0
    out = capsys.readouterr().out
    assert "to depth 3" in out and "differ by" in out
    grown, extra = checkpoint.load(tmp_path / "d3"), checkpoint.read_config(tmp_path / "d3")[1]
    assert grown.cfg.depth == 3 and extra["grown_from_depth"] == 2 and extra["step"] == 7
    assert "stored_as" not in extra  # float32 now, whatever the source was stored as
    assert main(["model", "grow", str(src), "--depth", "2", "--out", str(tmp_path / "d2")]) != 0
    assert "deeper than depth 2" in capsys.readouterr().err
    assert not (tmp_path / "d2").exists()
