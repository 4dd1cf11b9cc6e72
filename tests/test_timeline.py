"""Timelines on disk (our folder format and moshi-finetune's stereo WAV + alignments), their errors, the tokenizer."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.codecs.audio import SAMPLE_RATE
from microturn.stream.timeline import Event, TextEvent, Timeline, TimelineError, load_conversation
from microturn.stream.tokenizer import (BG, CUE_WORDS, DLG, DLG_END, EOT, HEARD, MAX_TIMER, NOTE, PAD, SIL, SPECIALS,
                                        TYPED, Tokenizer, default_tokenizer, heard, is_heard, is_timer, timer)
from microturn.stream.words import Word

PCM16_ERR = 1.5 / 32768  # written with scale 32767, read with 1 / 32768


def make_timeline(video: bool = True) -> Timeline:
    rng = np.random.default_rng(0)
    dur = 2.4
    n = int(dur * SAMPLE_RATE)
    user = (0.3 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)
    agent = (0.2 * np.sin(np.arange(n - 1000) * 0.05)).astype(np.float32)  # shorter than the session: padded
    words = [Word("hello", 0.2, 0.55), Word("there", 0.6, 0.9), Word("hi", 1.2, 1.4, "agent"),
             Word("señor", 1.45, 1.8, "agent"), Word("psst", 2.0, 2.1, "other")]
    text = [TextEvent(0.1, "say bingo in 2 seconds"), TextEvent(1.7, "42", "bg")]
    events = [Event(1.0, "delegate", "what is 6 * 7"), Event(1.7, "answer", "42")]
    vid = rng.integers(0, 256, (12, 24, 32, 3), dtype=np.uint8) if video else None
    return Timeline(duration=dur, user_audio=user, agent_audio=agent, video=vid, fps=5.0, words=words, text=text,
                    events=events, meta={"family": "timespeak", "seed": 3, "voices": ["en", "en+f3"]})


def test_save_load_round_trip(tmp_path):
    tl = make_timeline()
    folder = tl.save(tmp_path / "session")
    assert sorted(p.name for p in folder.iterdir()) == ["audio.wav", "timeline.json", "video.npy"]
    info = sf.info(str(folder / "audio.wav"))
    assert (info.channels, info.samplerate, info.subtype) == (2, SAMPLE_RATE, "PCM_16")
    back = Timeline.load(folder)
    assert back.duration == tl.duration and back.fps == tl.fps
    for name in ("user", "agent"):
        np.testing.assert_allclose(back.track(name), tl.track(name), atol=PCM16_ERR)
    assert back.words == tl.words
    assert back.words_of("agent") == [Word("hi", 1.2, 1.4, "agent"), Word("señor", 1.45, 1.8, "agent")]
    assert back.text == tl.text and back.events == tl.events and back.meta == tl.meta
    np.testing.assert_array_equal(back.video, tl.video)
    np.testing.assert_array_equal(back.frame_at(1.0), tl.video[5])
    assert back.frame_at(2.4) is None  # 12 frames at 5 fps end at 2.4 s
    # Saving what was loaded writes the same JSON.
    again = back.save(tmp_path / "again")
    assert json.loads((again / "timeline.json").read_text()) == json.loads((folder / "timeline.json").read_text())


def test_round_trip_without_video_or_audio(tmp_path):
    tl = Timeline(duration=1.0, words=[Word("yes", 0.2, 0.4, "agent")])
    back = Timeline.load(tl.save(tmp_path / "s"))
    assert back.video is None and back.words == tl.words
    assert len(back.track("user")) == SAMPLE_RATE and not back.track("agent").any()


def write_stereo(path, seconds=1.5, rate=24_000):
    t = np.arange(int(seconds * rate)) / rate
    agent = 0.5 * np.sin(2 * np.pi * 220 * t)
    user = 0.25 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(path), np.stack([agent, user], 1).astype(np.float32), rate, subtype="PCM_16")
    return agent, user


def test_moshi_finetune_conversation(tmp_path):
    """moshi-finetune's format: stereo WAV (channel 0 the main speaker, any rate) + {"alignments": [...]}."""
    write_stereo(tmp_path / "a.wav")
    al = {"alignments": [["Hello", [0.1, 0.4], "SPEAKER_MAIN"], ["hi", [0.5, 0.7], "SPEAKER_OTHER"],
                         ["how", [0.8, 1.0], "SPEAKER_MAIN"]]}
    (tmp_path / "a.json").write_text(json.dumps(al))
    tl = load_conversation(tmp_path / "a.wav", tmp_path / "a.json")
    assert tl.duration == pytest.approx(1.5)
    assert len(tl.user_audio) == len(tl.agent_audio) == pytest.approx(24_000, abs=2)  # resampled to 16 kHz
    # channel 0 is the agent (220 Hz, louder), channel 1 the user (440 Hz)
    assert np.sqrt(np.mean(tl.agent_audio[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert np.sqrt(np.mean(tl.user_audio[2000:-2000] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)
    assert [(w.w, w.start, w.end) for w in tl.words_of("agent")] == [("Hello", 0.1, 0.4), ("how", 0.8, 1.0)]
    other = [w for w in tl.words if w.speaker != "agent"]
    assert [(w.w, w.start, w.end) for w in other] == [("hi", 0.5, 0.7)]
    assert tl.text == [] and tl.events == [] and tl.video is None


def test_conversation_errors_name_the_file(tmp_path):
    write_stereo(tmp_path / "a.wav", 0.5)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"alignments": [["a", [0.1, 0.2], "SPEAKER_MAIN"]]}))

    def bad(name, content, match):
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(TimelineError, match=match):
            load_conversation(tmp_path / "a.wav", p)

    bad("broken.json", '{"alignments": [["a", [0.1, ', r"broken\.json: malformed JSON")
    bad("list.json", "[1, 2]", r"list\.json: expected a JSON object")
    bad("backwards.json", json.dumps({"alignments": [["a", [0.5, 0.2], "SPEAKER_MAIN"]]}),
        r"backwards\.json: bad word alignment: word 'a': end 0.2 is before start 0.5")
    bad("nan.json", '{"words": [{"w": "a", "start": NaN, "end": 1.0}]}', r"nan\.json: bad word.*finite")
    bad("short.json", json.dumps({"alignments": [["a", [0.1]]]}), r"short\.json: bad word alignment")
    bad("nostart.json", json.dumps({"words": [{"w": "a", "end": 1.0}]}), r"nostart\.json: bad word.*lacks start")
    bad("badtext.json", json.dumps({"text": [{"text": "hi"}]}), r"badtext\.json: bad text or event")
    bad("badkind.json", json.dumps({"events": [{"t": 1, "kind": "shout"}]}), r"badkind\.json: bad text or event")
    bad("badsource.json", json.dumps({"text": [{"t": 1, "text": "x", "source": "email"}]}),
        r"badsource\.json: bad text or event.*source")
    with pytest.raises(TimelineError, match=r"missing\.json not found"):
        load_conversation(tmp_path / "a.wav", tmp_path / "missing.json")
    with pytest.raises(TimelineError, match=r"nothere\.wav"):
        load_conversation(tmp_path / "nothere.wav", good)
    sf.write(str(tmp_path / "mono.wav"), np.zeros(8000, np.float32), 16000)
    with pytest.raises(TimelineError, match=r"mono\.wav: a conversation must be stereo.*1 channel"):
        load_conversation(tmp_path / "mono.wav", good)
    with pytest.raises(TimelineError, match=r"timeline\.json not found"):
        Timeline.load(tmp_path / "no_such_session")


def test_timeline_validation():
    with pytest.raises(TimelineError, match="duration"):
        Timeline(duration=float("nan"))
    with pytest.raises(TimelineError, match="duration"):
        Timeline(duration=-1.0)
    with pytest.raises(TimelineError, match="video must be uint8"):
        Timeline(duration=1.0, video=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(TimelineError, match="fps"):
        Timeline(duration=1.0, video=np.zeros((2, 8, 8, 3), np.uint8), fps=0)
    with pytest.raises(ValueError, match="NaN"):
        Timeline(duration=1.0, user_audio=np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="end 1 is before start 2"):
        Word("x", 2, 1)
    with pytest.raises(ValueError, match="finite"):
        Word("x", float("inf"), 1)
    with pytest.raises(ValueError, match="finite"):
        Word("x", True, 1)
    with pytest.raises(TimelineError, match="source"):
        TextEvent(0.0, "hi", "mail")
    with pytest.raises(TimelineError, match="t must be a finite number >= 0"):
        Event(-1.0, "delegate")


def test_word_json():
    w = Word("x", 0.5, 0.75, "agent")
    assert Word.from_json(w.to_json()) == w
    assert Word.from_json({"w": "y", "start": 1, "end": 2}) == Word("y", 1.0, 2.0, "user")
    assert w.shifted(1.0) == Word("x", 1.5, 1.75, "agent")


# --------------------------------------------------------------------------------------------------- tokenizer
def test_specials_have_fixed_ids():
    tok = default_tokenizer()
    assert SPECIALS[:8] == ("<pad>", "<eot>", "<dlg>", "</dlg>", "<typed>", "<bg>", "<sil>", "<note>")
    assert (PAD, EOT, DLG, DLG_END, TYPED, BG, SIL, NOTE) == tuple(range(8))
    assert SPECIALS[8:] == tuple(f"<t{k}>" for k in range(1, MAX_TIMER + 1)) + tuple(
        f"<heard:{w}>" for w in CUE_WORDS)
    assert SPECIALS[HEARD] == "<heard:apple>" and not is_timer(HEARD) and len(CUE_WORDS) == 30
    assert [timer(k) for k in (0, 1, MAX_TIMER, MAX_TIMER + 9)] == [NOTE + 1, NOTE + 1, HEARD - 1, HEARD - 1]
    assert [is_timer(i) for i in (NOTE, NOTE + 1, HEARD - 1, HEARD, len(SPECIALS))] == [False, True, True, False,
                                                                                          False]
    assert min(tok.encode("<t3> <note>")) >= len(SPECIALS)  # typed, they are text, not the silent tokens
    for i, s in enumerate(SPECIALS):
        assert tok.hf.token_to_id(s) == i and tok.token(i) == s
    assert 256 + len(SPECIALS) <= tok.vocab_size <= 2048
    assert tok.decode([EOT, PAD, SIL] + tok.encode("hi") + [DLG_END]) == "hi"  # decode drops controls
    assert tok.show([timer(12), NOTE] + tok.encode(" tiger bingo") + [EOT]) == "<t12> <note> tiger bingo <eot>"
    assert tok.show([heard("Pencil."), heard("pirate")] + tok.encode(" pencil")) == \
        "<heard:pencil> <heard:pirate> pencil"
    assert [is_heard(i) for i in (HEARD - 1, HEARD, heard("pirate"), heard("pirate") + 1)] == [False, True, True,
                                                                                                  False]
    with pytest.raises(ValueError, match="not a cue-list word"):
        heard("bingo")


def test_tokenizer_words():
    tok = default_tokenizer()
    ids = tok.encode_word("bingo")
    assert tok.decode(ids) == " bingo" and tok.starts_word(ids[0])
    assert all(not tok.starts_word(i) for i in ids[1:])
    assert not tok.starts_word(EOT)
    assert tok.encode("") == []
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(b"bytes")


def test_typed_specials_are_text():
    """A user who types "<eot>" or "<dlg>" gets text tokens, not control tokens (and the text round-trips)."""
    tok = default_tokenizer()
    for s in ("hello <eot> world", "<pad>", "a<dlg>b</dlg>", "<typed><bg><sil>"):
        ids = tok.encode(s)
        assert min(ids) >= len(SPECIALS), (s, ids)
        assert tok.decode(ids) == s


def test_tokenizer_file_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="microturn tokenizer"):
        Tokenizer.load(tmp_path / "nope.json")
    from tokenizers import Tokenizer as HF
    from tokenizers import models

    hf = HF(models.BPE())
    hf.add_special_tokens(["<eot>", "<pad>"])
    with pytest.raises(ValueError, match="special '<pad>' must have id 0"):
        Tokenizer(hf)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_tokenizer_round_trips_any_text(text):
    tok = default_tokenizer()
    ids = tok.encode(text)
    assert all(len(SPECIALS) <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(lambda s: s.strip() == s and s))
def test_encode_word_round_trips(word):
    tok = default_tokenizer()
    ids = tok.encode_word(word)
    assert tok.decode(ids) == " " + word
