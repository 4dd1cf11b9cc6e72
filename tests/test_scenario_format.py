"""Scenario set format v1: write -> read round trips, input loading, and the validator's messages."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.stream.scenario import (FAMILIES, INSTRUCTION_FAMILIES, MANIFEST, Rule, Scenario, ScenarioError,
                                       TextEvent, Video, input_mode, is_instruction_family, read_set, unknown_families,
                                       validate_set, write_set)
from microturn.stream.words import Word

GOOD = {
    "id": "cue-0007", "family": "cuespeak", "duration": 14.0,
    "text": [{"t": 0.4, "text": "When I say tiger, say bingo."}],
    "words": [{"w": "tiger", "start": 5.0, "end": 5.1}, {"w": "hi", "start": 6.0, "end": 6.2, "speaker": "other"}],
    "background": {"delay": 2.0},
    "expect": [{"kind": "say", "text": "bingo", "window": [5.1, 6.3]},
               {"kind": "say", "text": ["sorry", "I'm sorry"], "window": [1, 2]},
               {"kind": "silent", "window": [0, 5]},
               {"kind": "respond", "after": 1.0, "within": 1.5},
               {"kind": "stop", "after": 2.0, "within": 1.0},
               {"kind": "continue", "window": [1, 2]},
               {"kind": "no_gap", "window": [1, 2], "gap": 0.8},
               {"kind": "no_takeover", "window": [1, 9]},
               {"kind": "count", "target": 12, "tolerance": 1}],
}


def write_manifest(d: Path, objs) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objs]
    (d / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def test_families_in_spec_order():
    assert FAMILIES == ("turn", "pause", "backchannel", "interrupt", "user_backchannel", "other_speaker",
                        "timespeak", "cuespeak", "repcount", "delegate", "translate", "refusal")
    assert set(INSTRUCTION_FAMILIES) == {"timespeak", "cuespeak", "repcount", "delegate", "translate", "refusal"}
    assert issubclass(ScenarioError, ValueError)


def test_read_every_field_and_keep_unknown_keys(tmp_path):
    obj = dict(GOOD, made_by="other-tool", notes={"x": 1})
    obj["expect"] = [dict(GOOD["expect"][0], comment="kept")] + GOOD["expect"][1:]
    (s,) = read_set(write_manifest(tmp_path, [obj]))
    assert (s.id, s.family, s.duration) == ("cue-0007", "cuespeak", 14.0)
    assert s.text == [TextEvent(0.4, "When I say tiger, say bingo.")]
    assert s.words[1] == Word("hi", 6.0, 6.2, "other") and s.user_words == [Word("tiger", 5.0, 5.1)]
    assert s.background.delay == 2.0 and s.video is None and s.audio is None
    assert s.expect[0].window == (5.1, 6.3) and s.expect[0].alternatives == ("bingo",)
    assert s.expect[1].alternatives == ("sorry", "I'm sorry")
    assert s.expect[-1].target == 12 and s.expect[-1].tolerance == 1
    assert s.extra == {"made_by": "other-tool", "notes": {"x": 1}}
    out = s.to_json()
    assert out["made_by"] == "other-tool" and out["expect"][0]["comment"] == "kept"
    assert json.loads(json.dumps(out)) == json.loads(json.dumps(obj | {"expect": out["expect"]}))


def test_blank_lines_and_bom_are_fine(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / MANIFEST).write_text("\ufeff" + json.dumps(GOOD) + "\n\n   \n", encoding="utf-8")
    assert [s.id for s in read_set(d)] == ["cue-0007"]


def test_write_set_with_payloads_and_load_inputs(tmp_path):
    rate = 16_000
    wav = (0.1 * np.sin(np.arange(rate) / 10)).astype(np.float32)  # 1 s of audio in a 2 s scenario
    frames = np.random.default_rng(0).integers(0, 255, (4, 8, 6, 3), dtype=np.uint8)
    s = Scenario("rep-1", "repcount", 2.0, [{"kind": "count", "target": 3, "tolerance": 1}],
                 text=[{"t": 0.0, "text": "Count my reps."}])
    (back,) = write_set(tmp_path / "set", [s], audio={"rep-1": wav}, video={"rep-1": (frames, 5.0)})
    assert back.audio == "audio/rep-1.wav" and back.video == Video("video/rep-1.npy", 5.0)
    x = back.load_audio(rate)
    assert x.dtype == np.float32 and len(x) == 2 * rate
    assert np.allclose(x[:rate], wav, atol=1e-3) and not x[rate:].any()
    got, fps = back.load_video()
    assert fps == 5.0 and np.array_equal(got, frames)
    assert back.expect == [Rule("count", target=3, tolerance=1.0)]


def test_load_audio_stereo_other_rate_trimmed(tmp_path):
    d = tmp_path / "set"
    (d / "a").mkdir(parents=True)
    t = np.arange(3 * 8000) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 200 * t), np.zeros_like(t)], axis=1)
    sf.write(d / "a" / "x.wav", stereo, 8000, subtype="PCM_16")
    (s,) = read_set(write_manifest(d, [{"id": "x", "family": "turn", "duration": 1.5, "audio": "a/x.wav",
                                        "expect": [{"kind": "respond", "after": 1, "within": 0.5}]}]))
    x = s.load_audio(16_000)
    assert len(x) == 24_000 and 0.4 < np.abs(x).max() < 0.6  # first channel, resampled, cut to duration
    assert s.load_video() is None


def test_scenario_without_audio_is_silence(tmp_path):
    s = Scenario("t", "turn", 0.5, [Rule("silent", window=(0.0, 0.5))])
    assert np.array_equal(s.load_audio(16_000), np.zeros(8000, np.float32))


def test_empty_wav_is_silence(tmp_path):
    """A well-formed WAV of no samples is valid audio that ends at once: the input is silence after it."""
    d = tmp_path / "set"
    (d / "a").mkdir(parents=True)
    sf.write(d / "a" / "x.wav", np.zeros((0, 2)), 8000, subtype="PCM_16")
    (s,) = read_set(write_manifest(d, [{"id": "x", "family": "turn", "duration": 0.5, "audio": "a/x.wav",
                                        "expect": [{"kind": "silent", "window": [0, 0.5]}]}]))
    assert np.array_equal(s.load_audio(16_000), np.zeros(8000, np.float32))


def test_mp4_video_via_codec(tmp_path):
    pytest.importorskip("microturn.codecs.video")
    frames = np.full((6, 16, 16, 3), 128, np.uint8)
    s = Scenario("v", "repcount", 2.0, [Rule("count", target=1, tolerance=1.0)])
    (back,) = write_set(tmp_path, [s], video={"v": (frames, 5.0)}, video_format="mp4")
    assert back.video.path.endswith(".mp4")
    got, fps = back.load_video()
    assert fps == 5.0 and got.shape[1:] == (16, 16, 3) and got.dtype == np.uint8


def test_bad_video_payload_names_scenario(tmp_path):
    s = Scenario("v", "repcount", 2.0, [Rule("count", target=1, tolerance=1.0)])
    with pytest.raises(ScenarioError, match="'v'.*video"):
        write_set(tmp_path, [s], video={"v": (np.zeros((2, 4, 4), np.float32), 5.0)})


def test_input_mode():
    rules = [Rule("silent", window=(0.0, 1.0))]
    voice = Scenario("a", "cuespeak", 9, rules, words=[Word("when", 0.3, 0.5)], text=[TextEvent(4.0, "x")])
    typed = Scenario("b", "cuespeak", 9, rules, words=[Word("tiger", 3.0, 3.4)], text=[TextEvent(0.4, "x")])
    typed_only = Scenario("c", "refusal", 9, rules, text=[TextEvent(0.4, "x")])
    other_first = Scenario("d", "cuespeak", 9, rules, words=[Word("hey", 0.1, 0.2, "other"), Word("x", 2, 2.5)],
                           text=[TextEvent(1.0, "x")])
    forced = Scenario("e", "cuespeak", 9, rules, text=[TextEvent(0.4, "x")], extra={"input": "voice"})
    assert [input_mode(s) for s in (voice, typed, typed_only, other_first, forced)] == \
        ["voice", "typed", "typed", "typed", "voice"]
    # without word timings, the speech a caller hears in the audio decides (the bench: Silero VAD); asked only then
    spoken = Scenario("g", "refusal", 9, rules, text=[TextEvent(0.4, "x")], audio="a.wav")
    assert [input_mode(spoken, lambda s, t=t: t) for t in (0.2, 0.4, 3.0, None)] == ["voice", "typed", "typed", "typed"]

    def never(s):
        raise AssertionError(f"{s.id} has word timings, an instruction forced, or no audio: nothing to hear")
    assert [input_mode(s, never) for s in (voice, typed, typed_only, forced)] == ["voice", "typed", "typed", "voice"]
    assert input_mode(Scenario("f", "turn", 9, rules)) == "voice"


# ----------------------------------------------------------------------------------------------- the validator
def _with(**changes):
    o = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if v is None:
            o.pop(k, None)
        else:
            o[k] = v
    return o


def _rule(**r):
    return _with(expect=[r])


BAD = [  # (manifest object, words the message must contain)
    (_with(family=""), ["cue-0007", "family", "must be a name"]),
    (_with(family="a\tb"), ["cue-0007", "family", "must be a name"]),
    (_with(audio="x" * 5000 + ".wav"), ["cue-0007", "audio", "too long"]),
    (_with(family=3), ["cue-0007", "family", "string"]),
    (_with(text=[{"t": 1, "text": "a\ud800b"}]), ["cue-0007", "text[0].text", "not valid Unicode"]),
    (_with(words=[{"w": "\udfff", "start": 1, "end": 2}]), ["cue-0007", "words[0].w", "not valid Unicode"]),
    (_rule(kind="say", text="hi \ud800", window=[1, 2]), ["cue-0007", "expect[0].text", "not valid Unicode"]),
    (_rule(kind="silent", window=[1, 2], note="\ud800"), ["cue-0007", "expect[0].note", "not valid Unicode"]),
    (_with(notes={"a": "\ud800"}), ["cue-0007", "notes", "not valid Unicode"]),
    (_with(family=None), ["cue-0007", "family", "missing"]),
    (_with(duration=None), ["cue-0007", "duration", "missing"]),
    (_with(duration="14"), ["cue-0007", "duration", "number"]),
    (_with(duration=-1), ["cue-0007", "duration"]),
    (_with(duration=0), ["cue-0007", "duration"]),
    (_with(duration=True), ["cue-0007", "duration"]),
    (_with(expect=None), ["cue-0007", "expect", "missing"]),
    (_with(expect=[]), ["cue-0007", "expect"]),
    (_with(expect={"kind": "say"}), ["cue-0007", "expect", "list"]),
    (_with(audio=5), ["cue-0007", "audio", "string"]),
    (_with(audio="audio/none.wav"), ["cue-0007", "audio", "does not exist"]),
    (_with(video={"path": "v.npy", "fps": 5}), ["cue-0007", "video.path", "does not exist"]),
    (_with(video={"path": "v.npy"}), ["cue-0007", "video.fps", "missing"]),
    (_with(video={"path": "v.npy", "fps": 0}), ["cue-0007", "video.fps"]),
    (_with(video="v.mp4"), ["cue-0007", "video", "object"]),
    (_with(text=[{"t": -0.5, "text": "hi"}]), ["cue-0007", "text[0].t", "negative"]),
    (_with(text=[{"t": 1.0}]), ["cue-0007", "text[0].text", "missing"]),
    (_with(text=[{"t": 1.0, "text": 7}]), ["cue-0007", "text[0].text", "string"]),
    (_with(text={"t": 1.0, "text": "x"}), ["cue-0007", "text", "list"]),
    (_with(words=[{"w": "a", "start": 2.0, "end": 1.0}]), ["cue-0007", "words[0].end"]),
    (_with(words=[{"w": "a", "start": 1.0}]), ["cue-0007", "words[0].end", "missing"]),
    (_with(background={"delay": -2}), ["cue-0007", "background.delay"]),
    (_with(background={}), ["cue-0007", "background.delay", "missing"]),
    (_with(duration=10 ** 400), ["cue-0007", "duration", "finite", "too large"]),
    (_rule(kind="sing", window=[1, 2]), ["cue-0007", "expect[0].kind", "unknown rule kind 'sing'"]),
    (_rule(kind=["say"], text="x", window=[1, 2]), ["cue-0007", "expect[0].kind", "unknown rule kind ['say']"]),
    (_rule(kind={}, window=[1, 2]), ["cue-0007", "expect[0].kind", "unknown rule kind {}"]),
    (_rule(window=[1, 2]), ["cue-0007", "expect[0].kind", "missing"]),
    (_rule(kind="say", window=[1, 2]), ["cue-0007", "expect[0].text", "missing"]),
    (_rule(kind="say", text=5, window=[1, 2]), ["cue-0007", "expect[0].text"]),
    (_rule(kind="say", text=[], window=[1, 2]), ["cue-0007", "expect[0].text"]),
    (_rule(kind="say", text=["ok", 3], window=[1, 2]), ["cue-0007", "expect[0].text[1]"]),
    (_rule(kind="say", text="?!", window=[1, 2]), ["cue-0007", "expect[0].text", "no words"]),
    (_rule(kind="say", text="x", window=[3, 2]), ["cue-0007", "expect[0].window", "after"]),
    (_rule(kind="say", text="x", window=[1]), ["cue-0007", "expect[0].window"]),
    (_rule(kind="say", text="x", window=[-1, -2]), ["cue-0007", "expect[0].window", "after"]),
    (_rule(kind="say", text="x", window=[-2, -1]), ["cue-0007", "expect[0].window", "before the session starts"]),
    (_rule(kind="silent"), ["cue-0007", "expect[0].window", "missing"]),
    (_rule(kind="continue", window=["a", 2]), ["cue-0007", "expect[0].window[0]", "number"]),
    (_rule(kind="respond", after=1.0), ["cue-0007", "expect[0].within", "missing"]),
    (_rule(kind="respond", within=1.0), ["cue-0007", "expect[0].after", "missing"]),
    (_rule(kind="stop", after=1.0, within=-1), ["cue-0007", "expect[0].within", "negative"]),
    (_rule(kind="no_gap", window=[1, 2]), ["cue-0007", "expect[0].gap", "missing"]),
    (_rule(kind="no_takeover", window=[1, 2, 3]), ["cue-0007", "expect[0].window"]),
    (_rule(kind="count", tolerance=1), ["cue-0007", "expect[0].target", "missing"]),
    (_rule(kind="count", target=2.5, tolerance=1), ["cue-0007", "expect[0].target", "whole"]),
    (_rule(kind="count", target=3), ["cue-0007", "expect[0].tolerance", "missing"]),
    (_with(expect=[GOOD["expect"][0], "say"]), ["cue-0007", "expect[1]", "object"]),
    # payload files that exist but are not what they claim: refused when the set is read, not half-way through a run
    (_with(audio="a.wav"), ["cue-0007", "audio", "cannot read audio file"]),
    (_with(video={"path": "f.npy", "fps": 5}), ["cue-0007", "video.path", "uint8"]),
    (_with(video={"path": "e.npy", "fps": 5}), ["cue-0007", "video.path", "empty"]),
    (_with(video={"path": "t.mp4", "fps": 5}), ["cue-0007", "video.path", "cannot read video file"]),
    (_with(video={"path": "r.wav", "fps": 5}), ["cue-0007", "video.path", "no video stream"]),
]


@pytest.mark.parametrize("obj,needles", BAD, ids=[f"{i}-{n[1]}" for i, (_, n) in enumerate(BAD)])
def test_validator_names_scenario_and_field(tmp_path, obj, needles):
    d = write_manifest(tmp_path / "set", [obj])
    (d / "a.wav").write_text("not audio")  # files that exist, each broken its own way
    np.save(d / "f.npy", np.zeros((2, 4, 4, 3), np.float32))
    np.save(d / "e.npy", np.zeros((0, 4, 4, 3), np.uint8))
    (d / "t.mp4").write_bytes(b"\x00" * 64)
    sf.write(d / "r.wav", np.zeros(160, np.float32), 16000)  # real audio, given as video
    with pytest.raises(ScenarioError) as e:
        read_set(d)
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert "line 1" in msg


@pytest.mark.parametrize("text", ['{"id": "x", "family": "turn", "duration": NaN, "expect": []}'])
def test_nan_rejected(tmp_path, text):
    with pytest.raises(ScenarioError, match="'x'.*duration.*finite"):
        read_set(write_manifest(tmp_path, [text]))


def test_nan_inside_rule_rejected(tmp_path):
    line = json.dumps(_rule(kind="silent", window=[1.0, 2.0])).replace("2.0]", "NaN]")
    with pytest.raises(ScenarioError, match=r"cue-0007.*expect\[0\]\.window\[1\].*finite"):
        read_set(write_manifest(tmp_path, [line]))


@pytest.mark.parametrize("line,needles", [
    ("{not json", ["line 2", "not valid JSON"]),
    ("[1, 2]", ["line 2", "JSON object"]),
    (json.dumps(_with(id=None)), ["line 2", "field 'id'", "missing"]),
    (json.dumps(_with(id="cue 7/x")), ["line 2", "field 'id'", "'cue 7/x'"]),
    (json.dumps(_with(id="..")), ["line 2", "field 'id'"]),
    (json.dumps(_with(id="cue-8\n")), ["line 2", "field 'id'", "'cue-8\\n'"]),
    (json.dumps(_with(id=7)), ["line 2", "field 'id'", "string"]),
    (json.dumps(GOOD), ["line 2", "cue-0007", "duplicate id", "line 1"]),
])
def test_validator_names_line_when_id_is_unusable(tmp_path, line, needles):
    d = write_manifest(tmp_path, [GOOD, line])
    with pytest.raises(ScenarioError) as e:
        read_set(d)
    for needle in needles:
        assert needle in str(e.value)


def test_all_problems_reported_and_good_ones_kept(tmp_path):
    d = write_manifest(tmp_path, [GOOD, _with(id="b", family=" "), "{", _with(id="c", duration=None)])
    good, errors = validate_set(d)
    assert [s.id for s in good] == ["cue-0007"] and len(errors) == 3
    with pytest.raises(ScenarioError) as e:
        read_set(d)
    assert len(e.value.errors) == 3 and "' ' must be a name" in str(e.value)


def test_unknown_family_and_ids_in_any_script_are_read(tmp_path):
    """The spec: "an unknown family is reported as such, never silently skipped", so the scenario is kept (the bench
    scores and reports it under its own name); an id is letters of any script, digits, '_ . -'."""
    d = write_manifest(tmp_path, [GOOD, _with(id="café-1", family="karaoke"), _with(id="b", family="karaoke"),
                                  _with(id="c", family="turn taking | 2")])
    got = read_set(d)
    assert [(s.id, s.family) for s in got] == [("cue-0007", "cuespeak"), ("café-1", "karaoke"), ("b", "karaoke"),
                                               ("c", "turn taking | 2")]
    assert unknown_families(got) == {"karaoke": 2, "turn taking | 2": 1} and unknown_families(got[:1]) == {}
    assert not is_instruction_family("karaoke")


def test_missing_manifest_and_empty_set(tmp_path):
    with pytest.raises(ScenarioError, match="manifest.jsonl"):
        read_set(tmp_path)
    (tmp_path / MANIFEST).write_text("\n")
    with pytest.raises(ScenarioError, match="no scenarios"):
        read_set(tmp_path)


# ----------------------------------------------------------------------------------------------- round trip
times = st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 3))
windows = st.tuples(times, times).map(lambda ab: (min(ab), max(ab)))
texts = st.sampled_from(["bingo", "Sorry, I can't.", "seventy two", "plátano", "3293"])
rules = st.one_of(
    st.builds(lambda t, w: Rule("say", text=t, window=w), st.one_of(texts, st.lists(texts, min_size=1, max_size=3)
                                                                     .map(tuple)), windows),
    st.builds(lambda k, w: Rule(k, window=w), st.sampled_from(["silent", "continue", "no_takeover"]), windows),
    st.builds(lambda k, a, s: Rule(k, after=a, within=s), st.sampled_from(["respond", "stop"]), times, times),
    st.builds(lambda w, g: Rule("no_gap", window=w, gap=g), windows, times),
    st.builds(lambda n, k: Rule("count", target=n, tolerance=float(k)), st.integers(0, 100), st.integers(0, 3)),
)
words = st.builds(lambda w, s, d, sp: Word(w, s, round(s + d, 3), sp), st.sampled_from(["when", "I", "say"]),
                  times, times, st.sampled_from(["user", "other"]))
scenarios = st.builds(
    lambda i, fam, dur, ex, tx, ws, bg, extra: Scenario(f"s-{i}", fam, dur, ex, text=tx, words=ws,
                                                        background=bg, extra=extra),
    st.integers(0, 10**6), st.sampled_from(FAMILIES), st.floats(0.1, 600).map(lambda x: round(x, 3)),
    st.lists(rules, min_size=1, max_size=5), st.lists(st.builds(TextEvent, times, texts), max_size=3),
    st.lists(words, max_size=5), st.one_of(st.none(), st.builds(lambda d: {"delay": d}, times)),
    st.dictionaries(st.sampled_from(["meta", "source", "input"]), st.text(max_size=5), max_size=2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(scenarios, min_size=1, max_size=4, unique_by=lambda s: s.id))
def test_write_read_round_trip(items):
    with tempfile.TemporaryDirectory() as d:
        back = write_set(d, items)
        assert back == items
        assert read_set(d) == items
        assert all(s.root == Path(d) for s in back)


def test_written_manifest_is_spec_shaped(tmp_path):
    s = Scenario("x", "turn", 3.0, [Rule("respond", after=1.0, within=1.5)], text=[TextEvent(0.5, "hi")])
    write_set(tmp_path, [s])
    (obj,) = [json.loads(line) for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert obj == {"id": "x", "family": "turn", "duration": 3.0, "text": [{"t": 0.5, "text": "hi"}],
                   "expect": [{"kind": "respond", "after": 1.0, "within": 1.5}]}


def test_nested_too_deeply_is_a_line_error_not_a_crash(tmp_path):
    d = write_manifest(tmp_path, [GOOD, "[" * 100_000 + "]" * 100_000])
    with pytest.raises(ScenarioError, match="line 2: not valid JSON for a scenario: nested too deeply"):
        read_set(d)
    # near the parser's limit (which depends on the stack in use) a value may parse but not be written back: either
    # way a line error, never a crash
    said = set()
    for depth in range(1000, 800, -1):
        deep = json.dumps(_with(id="deep"))[:-1] + ', "notes": ' + "[" * depth + "]" * depth + "}"
        try:
            read_set(write_manifest(tmp_path / f"d{depth}", [GOOD, deep]))
        except ScenarioError as e:
            said.add(re.search(r"line 2: (.*nested too deeply)", str(e)).group(1))
    assert said == {"not valid JSON for a scenario: nested too deeply", "a value nested too deeply"}


def test_window_may_start_before_the_session(tmp_path):
    """A window written as [t - 1, t] near the start: read as written (and written back so); the bench clips it."""
    (s,) = read_set(write_manifest(tmp_path, [_rule(kind="no_gap", window=[-0.4, 0.6], gap=0.5)]))
    assert s.expect[0].window == (-0.4, 0.6) and s.expect[0].to_json()["window"] == [-0.4, 0.6]
