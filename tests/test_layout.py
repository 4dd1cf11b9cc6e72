"""The micro-turn layout: timelines -> token blocks -> words and events again; text queue, listen targets, masks."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.codecs import audio, dmel
from microturn.stream.layout import (FRAME_S, Layout, OutputDecoder, TextQueue, decode_outputs, encode_inputs,
                                     encode_timeline, listen_targets, out_loss_mask, out_schedule)
from microturn.stream.timeline import Event, TextEvent, Timeline, TimelineError
from microturn.stream.tokenizer import BG, DLG, DLG_END, EOT, PAD, SIL, TYPED, default_tokenizer, heard
from microturn.stream.words import Word

torch.set_num_threads(1)  # the machine's 2 cores are shared (see test_codecs.py)

L = Layout()
TOK = default_tokenizer()
# Words that are one tokenizer token each (checked in test_one_token_words), so any of them fits one micro-turn.
ONE_TOKEN = ("hello", "bingo", "seventy", "two", "apple", "yes", "no", "okay", "stop", "manzana", "twelve",
             "seconds", "ready", "go", "mhm", "right")


def at(t: int, delta: float = L.delta) -> float:
    """Second t * delta, rounded the way the decoder reports times."""
    return round(t * delta, 6)


def test_one_token_words():
    assert all(len(TOK.encode_word(w)) == 1 for w in ONE_TOKEN)


# ------------------------------------------------------------------------------------------------ the layout
def test_layout_geometry():
    assert (L.delta, L.frames, L.samples) == (0.2, 16, 3200)
    assert L.n_audio * L.frames_per_token == L.frames
    assert L.n_in == 1 + L.n_audio + L.n_video + L.n_text_in and L.length == L.n_in + L.n_out
    kinds = L.slot_kinds()
    assert len(kinds) == L.length and kinds[0] == "clock" and kinds[-L.n_out :] == ["out"] * L.n_out
    assert [kinds.count(k) for k in ("audio", "video", "text_in")] == [L.n_audio, L.n_video, L.n_text_in]
    assert Layout(**L.to_json()) == L
    assert Layout(video=False).length == L.length - L.n_video and Layout(video=False).n_video == 0
    assert L.n_turns(1.0) == 5 and L.n_turns(1.01) == 6 and L.n_turns(0.6000000000000001) == 3


@pytest.mark.parametrize("delta,fpt,n_audio", [(0.2, None, None), (0.1, 4, 2), (0.1, 8, 1), (0.2, 4, 4),
                                               (0.25, 4, 5), (0.25, 5, 4), (0.05, 4, 1), (1.0, 4, 20)])
def test_layout_accepts_whole_tokens(delta, fpt, n_audio):
    lay = Layout(delta=delta) if fpt is None else Layout(delta=delta, frames_per_token=fpt)
    assert lay.samples == round(delta * audio.SAMPLE_RATE) and lay.frames == round(delta / FRAME_S)
    assert lay.n_audio == (n_audio or lay.frames // lay.frames_per_token)


@pytest.mark.parametrize("delta", [0.08, 0.13, 0.3125, 0.075])
@pytest.mark.parametrize("fpt", [4, 8])
def test_layout_rejects_partial_tokens(delta, fpt):
    ms = f"{fpt * 12.5:g}"
    with pytest.raises(ValueError, match=rf"delta {delta} s must be a whole number of {fpt}-frame tokens \({ms} ms"):
        Layout(delta=delta, frames_per_token=fpt)


def test_layout_rejects_bad_fields():
    for kw, msg in [(dict(delta=0.04), "between 0.05 and 1.0"), (dict(delta=1.2), "between 0.05 and 1.0"),
                    (dict(n_out=1), "at least 2"), (dict(n_text_in=1), "at least 2")]:
        with pytest.raises(ValueError, match=msg):
            Layout(**kw)


def test_encode_inputs_shapes_and_content():
    rng = np.random.default_rng(0)
    user = (0.1 * rng.standard_normal(int(0.9 * 16000))).astype(np.float32)  # 0.9 s: 5 micro-turns, last padded
    video = rng.integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)  # 3 frames at 5 fps: micro-turns 0-2
    tl = Timeline(duration=0.9, user_audio=user, video=video, fps=5.0)
    x = encode_inputs(tl, L, TOK)
    assert x["clock"].tolist() == [0, 1, 2, 3, 4]
    assert x["audio"].shape == (5, L.n_audio, L.frames_per_token, 80) and x["audio"].dtype == np.uint8
    padded = np.concatenate([user, np.zeros(5 * 3200 - len(user), np.float32)])
    np.testing.assert_array_equal(x["audio"].reshape(-1, 80), dmel.encode(padded))
    assert x["video"].shape == (5, 80, 80, 3) and x["video_on"].tolist() == [True, True, True, False, False]
    assert not x["video"][3:].any()
    assert x["text_in"].shape == (5, L.n_text_in) and (x["text_in"] == PAD).all()
    assert encode_inputs(tl, Layout(video=False), TOK)["video_on"].tolist() == [False] * 5
    with pytest.raises(ValueError, match="16 dMel frames"):
        from microturn.stream.layout import audio_tokens
        audio_tokens(np.zeros((15, 80), np.uint8), L)


# -------------------------------------------------------------------------------------------- out round trips
def test_words_and_delegation_round_trip():
    """Agent words starting on micro-turn boundaries and a delegation come back with the same times."""
    words = [Word("hello", at(2), at(2) + 0.3, "agent"), Word("please", at(4), at(4) + 0.4, "agent"),
             Word("bingo", at(6), at(6) + 0.2, "agent"), Word("seventy", at(18), at(18) + 0.4, "agent"),
             Word("two", at(19), at(19) + 0.2, "agent"), Word("hi", at(3), at(3) + 0.2, "user")]
    events = [Event(at(8), "delegate", "what is six times seven"), Event(at(16), "answer", "42")]
    tl = Timeline(duration=4.0, words=words, events=events)
    enc = encode_timeline(tl, L, TOK)
    out = enc["out"]
    assert out.shape == (20, L.n_out)
    assert out[1, 0] == TOK.encode_word("hello")[0] and out[1, 1] == EOT  # emitted one micro-turn ahead
    assert out[7, 0] == DLG  # <dlg> what is six times seven </dlg>, over as many micro-turns as it needs
    dlg = [t for t in out[7:16].reshape(-1) if t not in (EOT, PAD)]
    assert dlg == [DLG] + TOK.encode(" what is six times seven") + [DLG_END]
    assert out[0].tolist() == [EOT] + [PAD] * (L.n_out - 1)  # silence is a lone <eot>
    assert ((out == EOT).sum(1) == 1).all()
    got, ev = decode_outputs(out, L, TOK)
    assert [(w.w, w.start, w.speaker) for w in got] == [(w.w, w.start, "agent") for w in tl.words_of("agent")]
    assert ev == [Event(at(8), "delegate", "what is six times seven")]
    # Without audio a word lasts one micro-turn, or until the next one starts.
    assert [w.end for w in got] == [at(3), at(5), at(7), at(19), at(20)]


def test_word_timing_rules():
    """A word is said in the window it starts in: the layout cannot start words mid-window, nor in window 0."""
    tl = Timeline(duration=2.0, words=[Word("yes", 0.0, 0.1, "agent"), Word("no", 0.53, 0.7, "agent"),
                                       Word("stop", 0.9999999, 1.2, "agent")])
    got, _ = decode_outputs(out_schedule(tl, L, TOK), L, TOK)
    assert [(w.w, w.start) for w in got] == [("yes", 0.2), ("no", 0.4), ("stop", 1.0)]


def test_crowded_words_queue_in_order():
    """More tokens than one micro-turn's budget (n_out - 1) wait for the next micro-turn, in order."""
    k = L.n_out - 1
    names = ONE_TOKEN[: 2 * k + 1]
    out = out_schedule(Timeline(duration=1.4, words=[Word(w, at(2), at(2), "agent") for w in names]), L, TOK)
    ids = [TOK.encode_word(w)[0] for w in names]
    assert out[1, :k].tolist() == ids[:k] and out[2, :k].tolist() == ids[k : 2 * k] and out[3, 0] == ids[-1]
    got, _ = decode_outputs(out, L, TOK)
    assert [(w.w, w.start) for w in got] == [(w, at(2 + i // k)) for i, w in enumerate(names)]


def test_notes_and_timers_are_written_not_said():
    """A note is <note> word in one micro-turn; a timer puts the micro-turns left first in every micro-turn until
    the one that acts, and stops early when called off. Neither decodes to a word; the streaming decoder's said
    tokens leave them out too."""
    from microturn.stream.tokenizer import NOTE, timer

    tl = Timeline(duration=3.0, words=[Word("okay", at(3), at(3) + 0.2, "agent"), Word("bingo", at(8), at(8) + 0.2,
                                                                                       "agent")],
                  events=[Event(at(2), "note", "seven bingo"), Event(at(3), "timer", f"{at(8)}"),
                          Event(at(9), "timer", f"{at(20)} {at(12)}")])
    out = out_schedule(tl, L, TOK)
    seven, bingo, okay = (TOK.encode_word(w)[0] for w in ("seven", "bingo", "okay"))
    assert out[1, :3].tolist() == [NOTE, seven, EOT] and out[2, :3].tolist() == [NOTE, bingo, EOT]
    assert out[3, :3].tolist() == [timer(4), okay, EOT]  # the ack waited for the notes
    assert [out[t, 0] for t in (4, 5, 6)] == [timer(3), timer(2), timer(1)] and out[7, 0] == bingo
    assert [out[t, 0] for t in (8, 9, 10)] == [timer(11), timer(10), timer(9)] and out[11, 0] == EOT  # called off
    assert ((out == EOT).sum(1) == 1).all()
    got, _ = decode_outputs(out, L, TOK)
    assert [(w.w, w.start) for w in got] == [("okay", at(4)), ("bingo", at(8))]
    dec = OutputDecoder(L, TOK)
    said = []
    for row in out:
        dec.push(row)
        said += dec.said
    assert said == [okay, bingo]
    # a note split by a micro-turn's end (a model may write one so) is still not said
    row = lambda *ids: np.array(list(ids) + [EOT] + [PAD] * (L.n_out - 1 - len(ids)))  # noqa: E731
    got, _ = decode_outputs(np.stack([row(timer(5), NOTE), row(timer(4), seven), row(okay)]), L, TOK)
    assert [w.w for w in got] == ["okay"]
    # ... but only over the next micro-turn's timer: a note left at a micro-turn's end before a word is dropped
    got, _ = decode_outputs(np.stack([row(timer(2), NOTE), row(seven)]), L, TOK)
    assert [w.w for w in got] == ["seven"]


def test_rehearsed_notes_fill_free_slots():
    """While notes are rehearsed they fill the slots words and timers leave free, a note and its word together
    unless the word can follow the next micro-turn's timer; the words said are unchanged."""
    from microturn.stream.tokenizer import NOTE, timer

    tiger, bingo = heard("tiger"), TOK.encode_word("bingo")[0]  # a cue-list word is noted as its heard token
    tl = Timeline(duration=2.4, words=[Word("bingo", at(5), at(5) + 0.2, "agent")],
                  events=[Event(at(1), "rehearse", f"tiger bingo; {at(9)}")])
    out = out_schedule(tl, L, TOK)
    assert [out[t, :2].tolist() for t in range(6)] == [[NOTE, tiger], [NOTE, bingo], [NOTE, tiger], [NOTE, bingo],
                                                       [bingo, EOT], [NOTE, tiger]]  # goes on after the word
    assert out[7, 0] == NOTE and out[8, 0] == EOT  # ... to its end
    tl = Timeline(duration=1.6, words=[Word("bingo", at(6), at(6) + 0.2, "agent")],
                  events=[Event(at(1), "timer", f"{at(6)}"), Event(at(1), "rehearse", f"bingo; {at(6)}")])
    out = out_schedule(tl, L, TOK)
    assert [out[t, :2].tolist() for t in range(6)] == [[timer(5), NOTE], [timer(4), bingo], [timer(3), NOTE],
                                                       [timer(2), bingo], [timer(1), EOT], [bingo, EOT]]
    got, _ = decode_outputs(out, L, TOK)
    assert [(w.w, w.start) for w in got] == [("bingo", at(6))]


def test_a_recited_answer_opens_each_round_with_bg():
    """A held background answer is recited like rehearsed notes, each round opened by <bg> alone in its micro-turn
    (a note and its word stay together); <bg> is written, never said, and the words said are unchanged."""
    from microturn.stream.tokenizer import NOTE

    two, eight = TOK.encode_word("two")[0], TOK.encode_word("eight")[0]
    tl = Timeline(duration=2.0, words=[Word("two", at(7), at(7) + 0.2, "agent"), Word("eight", at(8), at(8) + 0.2,
                                                                                       "agent")],
                  events=[Event(at(1), "note", "two"), Event(at(2), "note", "eight"),
                          Event(at(3), "recite", f"two eight; {at(7)}")])
    out = out_schedule(tl, L, TOK)
    assert [out[t, :2].tolist() for t in range(8)] == [[NOTE, two], [NOTE, eight], [BG, EOT], [NOTE, two],
                                                       [NOTE, eight], [BG, EOT], [two, EOT], [eight, EOT]]
    got, _ = decode_outputs(out, L, TOK)
    assert [(w.w, w.start) for w in got] == [("two", at(7)), ("eight", at(8))]
    with pytest.raises(TimelineError, match="recite event text"):
        Event(at(3), "recite", "; 1.0")


def test_recaps_mark_what_repeats():
    """A running timer's later values and the steady rehearsal (a note of a word noted at most two micro-turns
    before) are recaps; the first notes, a timer's first value, the words said, the <eot>s and a rehearsal that must
    find its word further back (the first after the notes, the first after an act) are not."""
    from microturn.stream.layout import recaps
    from microturn.stream.tokenizer import NOTE, timer

    tiger, bingo = heard("tiger"), TOK.encode_word("bingo")[0]  # a cue-list word is noted as its heard token
    # a time: "bingo" noted, then a timer and the rehearsal until the act
    tl = Timeline(duration=2.4, words=[Word("bingo", at(8), at(8) + 0.2, "agent")],
                  events=[Event(at(1), "note", "bingo"), Event(at(3), "timer", f"{at(8)}"),
                          Event(at(3), "rehearse", f"bingo; {at(8)}")])
    out = out_schedule(tl, L, TOK)
    rep = recaps(out)
    marked = lambda t: [int(x) for x, r in zip(out[t], rep[t]) if r]  # noqa: E731
    news = lambda t: [int(x) for x, r in zip(out[t], rep[t]) if not r and x not in (EOT, PAD)]  # noqa: E731
    assert news(0) == [NOTE, bingo]  # the note taken
    assert news(2) == [timer(5), NOTE] and news(3) == [bingo] and marked(3) == [timer(4)]  # first rehearsal: far
    assert marked(4) == [timer(3), NOTE] and marked(5) == [timer(2), bingo]  # then the steady rehearsal
    assert news(7) == [bingo] and not rep[out == EOT].any()  # what is said at the act is news
    # a cue: the two notes rehearsed in turn; the act breaks the rhythm, and the rehearsal after it is news again
    tl = Timeline(duration=2.4, words=[Word("bingo", at(5), at(5) + 0.2, "agent")],
                  events=[Event(at(0), "note", "tiger"), Event(at(1), "note", "bingo"),
                          Event(at(2), "rehearse", "tiger bingo")])
    out = out_schedule(tl, L, TOK)
    rep = recaps(out)
    assert out[4, 0] == bingo and not rep[4].any()  # the act
    for t in (5, 6):  # the first rehearsals after the act, three micro-turns from their last notes
        assert out[t, 1] in (tiger, bingo) and not rep[t].any()
    assert rep[7:, :2].all() and (out[7:, 0] == NOTE).all()
    # recaps are found within one out array (the loader marks each session on its own, before sessions are joined
    # into conversations): its first rows alone mark the same
    assert recaps(out[:3]).sum() == 2 and recaps(out[:2]).sum() == 0


def test_rehearsal_where_a_heard_word_ends_is_news():
    """With the listening targets, the first out token of the micro-turn in which a heard word ends, and of the one
    after (where an act on a cue would be), is never a recap: going on rehearsing there is a decision. Nothing else
    changes."""
    from microturn.stream.layout import listen_targets, recaps, word_ends
    from microturn.stream.tokenizer import NOTE

    tl = Timeline(duration=3.0, words=[Word("apple", at(6) + 0.02, at(7) + 0.1, "user"),
                                       Word("river", at(7) + 0.12, at(8) + 0.08, "user")],
                  events=[Event(at(0), "note", "tiger"), Event(at(1), "note", "bingo"),
                          Event(at(2), "rehearse", "tiger bingo")])
    out, heard = out_schedule(tl, L, TOK), listen_targets(tl, L, TOK)
    assert np.flatnonzero(word_ends(heard).any(1)).tolist() == [7, 8]
    plain, decided = recaps(out), recaps(out, heard)
    assert (out[4:, 0] == NOTE).all() and plain[4:, :2].all()  # the steady rehearsal
    assert np.flatnonzero(plain[:, 0] != decided[:, 0]).tolist() == [7, 8, 9]
    assert (plain[:, 1:] == decided[:, 1:]).all()
    assert not word_ends(np.full((4, L.n_audio), SIL)).any()


def test_heard_words_are_written_not_said_and_are_news():
    """A heard word is one token, <heard:word>, after a running timer; the response said at the same time follows
    it in the same micro-turn; it never decodes to a word, the streaming decoder leaves it out of the said tokens,
    it is never a recap, and the rehearsal it interrupts goes on where it was. A noted cue-list word is its heard
    token."""
    from microturn.stream.layout import recaps
    from microturn.stream.tokenizer import NOTE, timer

    bingo = TOK.encode_word("bingo")[0]
    tl = Timeline(duration=3.0, words=[Word("bingo", at(9), at(9) + 0.2, "agent")],
                  events=[Event(at(1), "rehearse", "tiger bingo"), Event(at(6), "heard", "pencil"),
                          Event(at(9), "heard", "tiger")])
    out = out_schedule(tl, L, TOK)
    assert [out[t, :3].tolist() for t in range(4, 10)] == [
        [NOTE, heard("tiger"), EOT], [heard("pencil"), EOT, PAD], [NOTE, bingo, EOT], [NOTE, heard("tiger"), EOT],
        [heard("tiger"), bingo, EOT], [NOTE, bingo, EOT]]
    rep = recaps(out)
    assert not rep[5].any() and not rep[8].any() and rep[4, :2].all()
    got, _ = decode_outputs(out, L, TOK)
    assert [(w.w, w.start) for w in got] == [("bingo", at(9))]
    dec, said = OutputDecoder(L, TOK), []
    for row in out:
        dec.push(row)
        said += dec.said
    assert said == [bingo]
    tl = Timeline(duration=1.2, events=[Event(at(1), "timer", f"{at(5)}"), Event(at(3), "heard", "pencil")])
    out = out_schedule(tl, L, TOK)
    assert out[2, :3].tolist() == [timer(2), heard("pencil"), EOT] and out[3, 0] == timer(1)


def test_timer_events_are_checked():
    assert Event(1.0, "timer", "4.2").timer() == (4.2, np.inf) and Event(1.0, "timer", "4.2 3").timer() == (4.2, 3.0)
    for bad in ("", "soon", "0.5", "1 2 3", "nan"):
        with pytest.raises(TimelineError, match="timer event"):
            Event(1.0, "timer", bad)


def test_streaming_decoder_equals_offline():
    words = [Word(w, at(t), at(t) + 0.1, "agent") for w, t in [("hello", 1), ("please", 3), ("go", 4)]]
    tl = Timeline(duration=2.0, words=words, events=[Event(at(6), "delegate", "the weather")])
    out = out_schedule(tl, L, TOK)
    dec, got, events = OutputDecoder(L, TOK), [], []
    for row in out:
        w, e = dec.push(row)
        got += w
        events += e
    got += dec.flush()
    assert (got, events) == decode_outputs(out, L, TOK)
    # t0: decoding the second half on its own shifts nothing.
    w2, e2 = decode_outputs(out[4:], L, TOK, t0=4)
    assert e2 == events and [w.start for w in w2] == [w.start for w in got if w.start > 0.8]


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@needs_espeak
@pytest.mark.parametrize("voice", ["en", "en+f3"])
def test_word_ends_from_agent_audio(tmp_path, voice):
    """Agent words rendered by espeak-ng, placed on boundaries: decoding with the agent mel finds their ends.

    Tolerance: a dMel frame i is voiced while any of the 800 samples before its end (i + 1) * 12.5 ms hold speech,
    so the last voiced frame ends 0 to 50 ms (the window, 4 frames) after the speech does; the VOICED threshold
    (mean log-mel > -5) can cut a faint tail by a frame. Measured on espeak-ng: +38 to +49 ms. Allowed: -1 to +5
    frames (-12.5 ms to +62.5 ms). No micro-turn slack is needed when each word's tokens fit its micro-turn and a
    silent window follows it (a word still sounding when the next starts is cut at that start instead).
    """
    t, agent, words = 1, np.zeros(int(6.0 * 16000), np.float32), []
    for w in ("hello", "bingo", "seventy", "manzana", "okay"):
        wav = tmp_path / f"{w}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), w], check=True, capture_output=True)
        x = audio.load_wav(wav)
        on = np.flatnonzero(np.abs(x) > 0.01)
        clip = x[on[0] : on[-1] + 1]  # the word without espeak-ng's leading and trailing silence
        i = int(round(at(t) * 16000))
        agent[i : i + len(clip)] = clip
        words.append(Word(w, at(t), at(t) + len(clip) / 16000, "agent"))
        t += int(np.ceil(len(clip) / 16000 / L.delta)) + 1  # the next word after at least one silent window
    tl = Timeline(duration=6.0, agent_audio=agent, words=words)
    enc = encode_timeline(tl, L, TOK)
    assert enc["mel"].shape == (30, 16, 80)
    got, _ = decode_outputs(enc["out"], L, TOK, mel=enc["mel"])
    assert [(w.w, w.start) for w in got] == [(w.w, w.start) for w in words]
    err = np.array([g.end - w.end for g, w in zip(got, words)])
    assert np.all(err >= -FRAME_S) and np.all(err <= 5 * FRAME_S), err
    # The streaming decoder, fed one micro-turn at a time, reports each word once it is over (a silent window).
    dec, seen = OutputDecoder(L, TOK), []
    for row, mel in zip(enc["out"], enc["mel"]):
        seen += dec.push(row, mel)[0]
    assert seen + dec.flush() == got


# ----------------------------------------------------------------------------------------------- input text
def test_text_queue_spills_and_keeps_order():
    long = "please say the word manzana in exactly twelve seconds from now and then stop talking"
    tl = Timeline(duration=6.0, text=[TextEvent(0.05, long), TextEvent(0.1, "42", "bg"),
                                      TextEvent(5.5, "late", "typed")])
    text_in = encode_inputs(tl, L, TOK)["text_in"]
    assert text_in.shape == (30, L.n_text_in)
    expected = [TYPED] + TOK.encode(" " + long) + [BG] + TOK.encode(" 42")
    n = len(expected)
    assert n > 2 * L.n_text_in and n < 27 * L.n_text_in  # it really spills over several micro-turns
    flat = text_in.reshape(-1)
    assert flat[:n].tolist() == expected  # every token, in order, from micro-turn 0 on, no gaps
    assert (flat[n : 27 * L.n_text_in] == PAD).all()
    assert text_in[27, 0] == TYPED  # "late" arrives in micro-turn 27 (5.4-5.6 s)
    assert [t for t in flat[27 * L.n_text_in :] if t != PAD] == [TYPED] + TOK.encode(" late")


def test_text_queue_direct():
    q = TextQueue(L, TOK)
    assert q.take().tolist() == [PAD] * L.n_text_in
    q.push("  bingo  ")
    q.push("yes", "bg")
    expected = [TYPED, TOK.encode_word("bingo")[0], BG, TOK.encode_word("yes")[0]]
    got = np.concatenate([q.take() for _ in range(4 // L.n_text_in + 1)]).tolist()
    assert got == expected + [PAD] * (len(got) - 4)


def test_text_arriving_at_window_edge():
    tl = Timeline(duration=1.0, text=[TextEvent(at(2), "go")])  # exactly at 0.4 s: micro-turn 2's window
    text_in = encode_inputs(tl, L, TOK)["text_in"]
    assert (text_in[:2] == PAD).all() and text_in[2, 0] == TYPED


# --------------------------------------------------------------------------------------------- listen targets
@pytest.mark.parametrize("lay", [L, Layout(frames_per_token=4)], ids=["default", "50ms-tokens"])
def test_listen_targets_mark_the_user_word_under_way(lay):
    words = [Word("hello", 0.2, 0.55), Word("bingo", 0.6, 0.9), Word("okay", 1.0, 1.1, "agent"),
             Word("mhm", 1.2, 1.3, "other")]
    lt = listen_targets(Timeline(duration=1.6, words=words), lay, TOK)
    assert lt.shape == (8, lay.n_audio)
    hello, bingo, mhm = (TOK.encode_word(w)[0] for w in ("hello", "bingo", "mhm"))
    # audio token k of micro-turn t spans delta / n_audio; its middle is at (t * n_audio + k + 0.5) * span
    span = lay.delta / lay.n_audio
    mids = (np.arange(8 * lay.n_audio) + 0.5) * span
    expected = np.full(8 * lay.n_audio, SIL)
    expected[(mids >= 0.2) & (mids < 0.55)] = hello
    expected[(mids >= 0.6) & (mids < 0.9)] = bingo
    expected[(mids >= 1.2) & (mids < 1.3)] = mhm  # any speaker but the agent is heard
    np.testing.assert_array_equal(lt.reshape(-1), expected)
    assert lt[1].tolist() == [hello] * lay.n_audio  # 0.2-0.4 s: "hello" all through
    assert lt[0].tolist() == [SIL] * lay.n_audio and lt[5].tolist() == [SIL] * lay.n_audio  # the agent's word


@pytest.mark.parametrize("lay", [L, Layout(frames_per_token=4)], ids=["default", "50ms-tokens"])
@pytest.mark.parametrize("reach,changed", [(0.0, [4, 6]), (0.2, [4, 6]), (0.25, [6]), (0.4, [6]), (0.45, []),
                                           (1.0, [])])
def test_listen_targets_with_ends_name_a_word_where_it_ends(lay, reach, changed):
    """With ``ends`` the token a word ends in names it too, where the word reaches ``ends`` seconds into it (to the
    edge), over the word covering its middle; of two words ending in one token, the later; the tokens before are as
    without; a word ending on a token's edge changes nothing."""
    from microturn.stream.layout import end_label

    span = lay.delta / lay.n_audio
    # "fifteen" ends a fifth into the token after its last middle; "times" covers that token's middle; "two" and
    # "three" (very short) both end in one token; "stop" ends exactly on a token's edge
    words = [Word("fifteen", 2 * span, 4.2 * span), Word("times", 4.3 * span, 6.4 * span),
             Word("two", 7.6 * span, 8.2 * span), Word("three", 8.3 * span, 8.8 * span),
             Word("stop", 10.1 * span, 12 * span), Word("okay", 12.2 * span, 13.3 * span, "agent")]
    tl = Timeline(duration=16 * span, words=words)
    plain, ends = (listen_targets(tl, lay, TOK, e).reshape(-1) for e in (None, reach * span))
    fifteen, times, two, three = (TOK.encode_word(w)[0] for w in ("fifteen", "times", "two", "three"))
    assert plain[4] == times and ends[4] == (fifteen if 4 in changed else times)  # fifteen's "-n" is in token 4
    assert plain[6] == SIL and ends[6] == (times if 6 in changed else SIL)  # times ends 0.4 span into token 6
    assert plain[7] == ends[7] == SIL and plain[8] == ends[8] == three  # "two" ends in 8 before "three": none
    assert two not in ends
    assert np.nonzero(plain != ends)[0].tolist() == changed  # "stop" ends on token 11's edge, "okay" is the agent's
    assert [end_label(w.end, span, reach * span) for w in words[:2]] == [k if k in changed else None for k in (4, 6)]
    assert end_label(words[0].end, span, None) is None
    with pytest.raises(TypeError):  # session 63's flag: False would be 0 s
        listen_targets(tl, lay, TOK, False)
    with pytest.raises(ValueError, match="must be 0-"):  # beyond one audio token
        listen_targets(tl, lay, TOK, 1.01 * span)
    np.testing.assert_array_equal(listen_targets(tl, lay, TOK), plain.reshape(-1, lay.n_audio))


def test_listen_targets_do_not_hear_case():
    """A cue said on its own is written "Rocket": its target is the word's token, as for "rocket" (the written
    word's first token would be a capital R shared by many words)."""
    assert TOK.encode_word("Rocket")[0] != TOK.encode_word("rocket")[0]  # else this test proves nothing
    heard = lambda w: listen_targets(Timeline(duration=0.6, words=[Word(w, 0.1, 0.5)]), L, TOK)  # noqa: E731
    np.testing.assert_array_equal(heard("Rocket"), heard("rocket"))
    assert TOK.encode_word("rocket")[0] in heard("Rocket")


def test_out_loss_mask():
    out = np.array([[EOT, PAD, PAD, PAD], [11, 12, EOT, PAD], [11, 12, 13, EOT], [EOT, EOT, PAD, PAD]])
    np.testing.assert_array_equal(out_loss_mask(out), [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert out_loss_mask(out[None]).shape == (1, 4, 4)
    enc = out_schedule(Timeline(duration=1.0, words=[Word("hello", 0.4, 0.6, "agent")]), L, TOK)
    assert out_loss_mask(enc).sum() == 5 + 1  # one <eot> per micro-turn plus the one word


# ---------------------------------------------------------------------------------------------- properties
@st.composite
def boundary_words(draw):
    """Agent words on distinct micro-turn boundaries 1..39 (each fits its micro-turn), and a delta."""
    delta = draw(st.sampled_from([0.1, 0.2, 0.3]))
    turns = sorted(draw(st.sets(st.integers(1, 39), max_size=12)))
    ws = [draw(st.sampled_from(FITS)) for _ in turns]
    return delta, [Word(w, at(t, delta), at(t, delta) + 0.05, "agent") for w, t in zip(ws, turns)]


FITS = tuple(w for w in ONE_TOKEN + ("please", "what", "thanks", "hmm") if len(TOK.encode_word(w)) < L.n_out)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(boundary_words())
def test_boundary_words_round_trip(case):
    delta, words = case
    lay = Layout(delta=delta, n_out=L.n_out)
    tl = Timeline(duration=40 * delta, words=words)
    out = out_schedule(tl, lay, TOK)
    assert out.shape == (40, lay.n_out) and ((out == EOT).sum(1) == 1).all()
    assert out_loss_mask(out).sum() == 40 + sum(len(TOK.encode_word(w.w)) for w in words)
    got, events = decode_outputs(out, lay, TOK)
    assert events == []
    assert [(w.w, w.start) for w in got] == [(w.w, w.start) for w in words]
