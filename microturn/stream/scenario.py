"""Scenario sets, format v1 (``spec/scenarios.md``): read, validate and write them, and load a scenario's inputs.

A set is a folder with ``manifest.jsonl`` (one scenario per line) and the audio/video files it names by paths
relative to the folder::

    scenarios = read_set("sets/dev")             # validated; raises ScenarioError naming line, id and field
    wav = scenarios[0].load_audio(16_000)        # float32 mono, exactly duration * rate samples
    video = scenarios[0].load_video()            # (uint8 [T, H, W, 3], fps) or None
    write_set("out/set", scenarios, audio={"cue-0007": wav})

Readings of the spec chosen here:

- Unknown top-level keys of a scenario are kept in ``Scenario.extra`` (and written back); unknown keys of a rule are
  kept in ``Rule.extra``. Unknown keys inside ``video``, ``background``, text events and words are ignored.
- An unknown rule ``kind`` is an error (a rule the bench cannot score must not silently pass), and so is an empty
  ``expect`` (a scenario without rules would always pass) and a set without scenarios. Blank manifest lines are skipped.
- Ids are letters (any script's: ``café`` is one), digits, ``_ . -``; ids that consist only of dots (``.``, ``..``)
  are rejected: ids also name folders (``--export-fdb DIR/<id>/``).
- A ``family`` not among the spec's twelve (:data:`FAMILIES`) is kept, "reported as such, never silently skipped":
  the bench scores its rules like any other's and reports it under its own name, after the spec's families, and
  names it in the report's ``unknown_families`` and on stderr (:func:`unknown_families`). It must be a non-empty
  string of letters, digits, ``_ . -`` like an id, since it names a block of the report and a row of its table.
- Every string the bench reads (ids, families, paths, texts, words, rule texts) must be real Unicode: JSON can
  carry a lone surrogate (``"\\ud800"``), which no text can hold, so it is an error naming its field here rather
  than a failure in the middle of a bench; so must the unknown keys kept to be written back.
- Times (``duration``, ``t``, window ends, ``after``, ``within``, ``gap``, ``delay``, word times) must be finite and
  not negative, but for a window's start (a window written as "from t - 1" may start before 0; it must end at 0 or
  later); ``duration`` and ``fps`` must be positive. Windows may reach past ``duration`` or before 0: the bench
  clips.
- ``family``: any printable name; one not in :data:`FAMILIES` is scored and reported under its own name.
- The audio and video files must exist and their headers must read as such (a set with a broken file is refused
  before it runs, rather than failing half-way through a bench).
- A ``say`` text (or each alternative) must normalise to at least one word, or it could never be said.
- ``count``: ``target`` must be a whole number; ``tolerance`` any number >= 0.
- ``video.fps`` is required and wins over a container's own frame rate: frames are shown at ``fps`` from second 0.
- :func:`input_mode`: a scenario "counts as typed when its first instruction is typed". The practical rule: a
  top-level ``"input": "typed" | "voice"`` key (an extension of this project; other sets need not carry it) wins;
  otherwise it is typed when a text event arrives at or before the start of the first user word (speaker "user");
  without user words, at or before the first speech a voice-activity detector hears in the audio (the caller's
  ``hear``; the bench's is Silero VAD), and typed when there is no audio or none is heard; else voice.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .tokenizer import check_text
from .words import Word

FAMILIES = ("turn", "pause", "backchannel", "interrupt", "user_backchannel", "other_speaker",
            "timespeak", "cuespeak", "repcount", "delegate", "translate", "refusal")
INSTRUCTION_FAMILIES = ("timespeak", "cuespeak", "repcount", "delegate", "translate", "refusal")
RULE_FIELDS = {
    "say": ("text", "window"),
    "silent": ("window",),
    "respond": ("after", "within"),
    "stop": ("after", "within"),
    "continue": ("window",),
    "no_gap": ("window", "gap"),
    "no_takeover": ("window",),
    "count": ("target", "tolerance"),
}
RULE_KINDS = tuple(RULE_FIELDS)
MANIFEST = "manifest.jsonl"
KNOWN_KEYS = ("id", "family", "duration", "audio", "video", "text", "words", "background", "expect")
_MAX_REPORTED = 20


class ScenarioError(ValueError):
    """A malformed scenario or set. ``errors`` lists every problem found, one message each."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


class _Bad(Exception):
    """Internal: one field of one scenario is wrong."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field, self.problem = field_name, problem


# ----------------------------------------------------------------------------------------------- field checks
def _num(v, name: str, *, positive: bool = False, signed: bool = False) -> float:
    """A finite, non-negative (or positive, or with ``signed`` any) JSON number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(name, f"must be a number, got {v!r}")
    try:
        v = float(v)
    except OverflowError:  # an integer too large for a float
        raise _Bad(name, "must be a finite number, got an integer too large for one") from None
    if not math.isfinite(v):
        raise _Bad(name, f"must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise _Bad(name, f"must be > 0, got {v!r}")
    if v < 0 and not signed:
        raise _Bad(name, f"must not be negative, got {v!r}")
    return v


def _kept(extra: dict, where: str = "") -> dict:
    """Unknown keys, kept to be written back: they too must be real Unicode, or writing the set back would fail."""
    for k, v in extra.items():
        try:
            json.dumps({k: v}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"{where}.{k}" if where else k, "is not valid Unicode (a lone surrogate escape?)") from None
    return extra


def _is_name(v) -> bool:
    """An id: letters (any script's) and digits, ``_ . -``, at least one character."""
    return isinstance(v, str) and bool(v) and all(c.isalnum() or c in "_.-" for c in v)


def _str(v, name: str, *, empty_ok: bool = True) -> str:
    if not isinstance(v, str):
        raise _Bad(name, f"must be a string, got {v!r}")
    try:
        check_text(v)
    except ValueError as e:
        raise _Bad(name, str(e)) from None
    if not empty_ok and not v.strip():
        raise _Bad(name, "must not be empty")
    return v


def _obj(v, name: str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(name, f"must be an object, got {v!r}")
    return v


def _list(v, name: str) -> list:
    if not isinstance(v, list):
        raise _Bad(name, f"must be a list, got {v!r}")
    return v


def _need(d: dict, key: str, name: str):
    if key not in d:
        raise _Bad(name, "missing")
    return d[key]


def _window(v, name: str) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _Bad(name, f"must be a list [a, b], got {v!r}")
    # signed: a window written as "from t - 1" may start before the session does (no word can start there)
    a, b = _num(v[0], f"{name}[0]", signed=True), _num(v[1], f"{name}[1]", signed=True)
    if a > b:
        raise _Bad(name, f"start {a} is after end {b}")
    if b < 0:
        raise _Bad(name, f"ends at {b}, before the session starts: no rule could hold or fail there")
    return a, b


def _say_text(v, name: str) -> str | tuple[str, ...]:
    if isinstance(v, str):
        alts, out = [_str(v, name)], v
    elif isinstance(v, (list, tuple)) and v:
        alts = [_str(x, f"{name}[{i}]") for i, x in enumerate(v)]
        out = tuple(alts)
    else:
        raise _Bad(name, f"must be a string or a non-empty list of strings, got {v!r}")
    for i, alt in enumerate(alts):
        if not _has_words(alt):
            raise _Bad(name if isinstance(v, str) else f"{name}[{i}]", f"{alt!r} has no words after normalisation")
    return out


def _has_words(text: str) -> bool:
    """Whether ``text`` keeps a word under the spec's normalisation (a letter or a digit survives it)."""
    return any(c.isalpha() or c.isdecimal() for c in unicodedata.normalize("NFKD", text))


# ----------------------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Rule:
    """One ``expect`` rule. Which fields are set depends on ``kind`` (see ``RULE_FIELDS``)."""

    kind: str
    text: str | tuple[str, ...] | None = None
    window: tuple[float, float] | None = None
    after: float | None = None
    within: float | None = None
    gap: float | None = None
    target: int | None = None
    tolerance: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def alternatives(self) -> tuple[str, ...]:
        """The ``say`` texts any one of which will do."""
        if self.text is None:
            return ()
        return (self.text,) if isinstance(self.text, str) else tuple(self.text)

    def to_json(self) -> dict:
        d: dict = {"kind": self.kind}
        for key in RULE_FIELDS.get(self.kind, ()):
            v = getattr(self, key)
            d[key] = list(v) if isinstance(v, tuple) else v
        return d | {k: v for k, v in self.extra.items() if k not in d}

    @classmethod
    def from_json(cls, d, name: str = "expect") -> "Rule":
        """Parse and check one rule; raises ScenarioError naming the field (``name`` prefixes it)."""
        try:
            return cls._parse(d, name)
        except _Bad as e:
            raise ScenarioError(f"field '{e.field}': {e.problem}") from None

    @classmethod
    def _parse(cls, d, name: str) -> "Rule":
        d = _obj(d, name)
        kind = _need(d, "kind", f"{name}.kind")
        if not isinstance(kind, str) or kind not in RULE_FIELDS:
            raise _Bad(f"{name}.kind", f"unknown rule kind {kind!r} (known: {', '.join(RULE_KINDS)})")
        vals: dict = {}
        for key in RULE_FIELDS[kind]:
            v, fname = _need(d, key, f"{name}.{key}"), f"{name}.{key}"
            if key == "window":
                vals[key] = _window(v, fname)
            elif key == "text":
                vals[key] = _say_text(v, fname)
            elif key == "target":
                n = _num(v, fname)
                if n != int(n):
                    raise _Bad(fname, f"must be a whole number, got {v!r}")
                vals[key] = int(n)
            else:
                vals[key] = _num(v, fname)
        extra = _kept({k: v for k, v in d.items() if k != "kind" and k not in vals}, name)
        return cls(kind=kind, extra=extra, **vals)


@dataclass(frozen=True)
class TextEvent:
    """Typed user text arriving at second ``t``."""

    t: float
    text: str

    def to_json(self) -> dict:
        return {"t": self.t, "text": self.text}


@dataclass(frozen=True)
class Video:
    """The user's camera: a ``.npy`` (uint8 [T, H, W, 3]) or any container PyAV opens, shown at ``fps``."""

    path: str
    fps: float

    def to_json(self) -> dict:
        return {"path": self.path, "fps": self.fps}


@dataclass(frozen=True)
class Background:
    """The bench's background model: ``delay`` seconds from delegation to the answer."""

    delay: float

    def to_json(self) -> dict:
        return {"delay": self.delay}


@dataclass
class Scenario:
    """One scenario of a set. ``root`` is the set folder that relative paths are resolved against.

    Generators may pass rules, text events, words, video and background as plain JSON dicts: they are parsed
    (and checked) on construction.
    """

    id: str
    family: str
    duration: float
    expect: list[Rule]
    audio: str | None = None
    video: Video | None = None
    text: list[TextEvent] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    background: Background | None = None
    extra: dict = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if any(isinstance(x, dict) for x in self.expect):
            self.expect = [Rule.from_json(r, f"expect[{i}]") if isinstance(r, dict) else r
                           for i, r in enumerate(self.expect)]
        self.text = [e if isinstance(e, TextEvent) else _text_event(e) for e in self.text]
        self.words = [w if isinstance(w, Word) else Word.from_json(w) for w in self.words]
        if isinstance(self.video, dict):
            self.video = Video(str(self.video["path"]), float(self.video["fps"]))
        if isinstance(self.background, dict):
            self.background = Background(float(self.background["delay"]))
        if self.root is not None:
            self.root = Path(self.root)

    # --------------------------------------------------------------------------------------- json
    def to_json(self) -> dict:
        d: dict = {"id": self.id, "family": self.family, "duration": self.duration}
        if self.audio is not None:
            d["audio"] = self.audio
        if self.video is not None:
            d["video"] = self.video.to_json()
        if self.text:
            d["text"] = [e.to_json() for e in self.text]
        if self.words:
            d["words"] = [w.to_json() for w in self.words]
        if self.background is not None:
            d["background"] = self.background.to_json()
        d["expect"] = [r.to_json() for r in self.expect]
        return d | {k: v for k, v in self.extra.items() if k not in d}

    @classmethod
    def from_json(cls, d, root: str | Path | None = None, where: str = "") -> "Scenario":
        """Parse and check one manifest object. Raises ScenarioError naming the scenario (or ``where``) and field.

        With ``root`` given, referenced files must exist under it.
        """
        sid = d.get("id") if isinstance(d, dict) else None
        label = f"scenario {sid!r}" if _is_name(sid) else ""
        try:
            s = _parse_scenario(d)
            if root is not None:
                s.root = Path(root)
                _check_files(s)
            return s
        except _Bad as e:
            prefix = ", ".join(p for p in (where, label) if p)
            raise ScenarioError(f"{prefix}: field '{e.field}': {e.problem}" if prefix
                                else f"field '{e.field}': {e.problem}") from None

    # --------------------------------------------------------------------------------------- inputs
    def path(self, rel: str) -> Path:
        """A path of the manifest resolved against the set folder."""
        return (self.root or Path(".")) / rel

    @property
    def user_words(self) -> list[Word]:
        return sorted((w for w in self.words if w.speaker == "user"), key=lambda w: w.start)

    def load_audio(self, rate: int = 16_000) -> np.ndarray:
        """The user's audio as float32 mono at ``rate``: first channel, resampled, padded with silence (or cut)
        to exactly ``round(duration * rate)`` samples. Silence when the scenario has no audio."""
        from ..codecs.audio import AudioError, load_wav

        n = int(round(self.duration * rate))
        if self.audio is None:
            return np.zeros(n, np.float32)
        try:
            x = load_wav(self.path(self.audio), rate=rate, channel=0)
        except AudioError as e:
            raise ScenarioError(f"scenario {self.id!r}: field 'audio': {e}") from e
        out = np.zeros(n, np.float32)
        out[: min(n, len(x))] = x[:n]
        return out

    def load_video(self) -> tuple[np.ndarray, float] | None:
        """The user's camera as (uint8 frames [T, H, W, 3], fps), or None without video. ``fps`` is the manifest's."""
        if self.video is None:
            return None
        p = self.path(self.video.path)
        try:
            if p.suffix.lower() == ".npy":
                frames = np.load(p, allow_pickle=False)
            else:
                from ..codecs.video import read_frames

                frames, _ = read_frames(p)
        except ScenarioError:
            raise
        except Exception as e:  # numpy and PyAV raise many types; name the scenario and file in one error
            raise ScenarioError(f"scenario {self.id!r}: field 'video.path': cannot read {p}: {e}") from e
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ScenarioError(f"scenario {self.id!r}: field 'video.path': {p} must hold uint8 frames "
                                f"[T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        return frames, self.video.fps


def _text_event(e) -> TextEvent:
    if isinstance(e, dict):
        return TextEvent(float(e["t"]), str(e["text"]))
    return TextEvent(float(e.t), str(e.text))  # e.g. a timeline TextEvent


# ----------------------------------------------------------------------------------------------- parsing
def _parse_scenario(d) -> Scenario:
    if not isinstance(d, dict):
        raise _Bad("(whole line)", f"a scenario must be a JSON object, got {type(d).__name__}")
    sid = _str(_need(d, "id", "id"), "id")
    if not _is_name(sid) or set(sid) == {"."}:
        raise _Bad("id", f"{sid!r} must be letters, digits, '_', '.', '-' (and not only dots)")
    family = _str(_need(d, "family", "family"), "family")  # any name: an unknown family is scored and reported
    if not family.strip() or not family.isprintable():
        raise _Bad("family", f"{family!r} must be a name (the spec's: {', '.join(FAMILIES)})")
    duration = _num(_need(d, "duration", "duration"), "duration", positive=True)
    expect = _list(_need(d, "expect", "expect"), "expect")
    if not expect:
        raise _Bad("expect", "must hold at least one rule")
    rules = [Rule._parse(r, f"expect[{i}]") for i, r in enumerate(expect)]
    audio = None if d.get("audio") is None else _str(d["audio"], "audio", empty_ok=False)
    return Scenario(id=sid, family=family, duration=duration, expect=rules, audio=audio,
                    video=_parse_video(d.get("video")), text=_parse_text(d.get("text")),
                    words=_parse_words(d.get("words")), background=_parse_background(d.get("background")),
                    extra=_kept({k: v for k, v in d.items() if k not in KNOWN_KEYS}))


def _parse_video(v) -> Video | None:
    if v is None:
        return None
    v = _obj(v, "video")
    path = _str(_need(v, "path", "video.path"), "video.path", empty_ok=False)
    return Video(path, _num(_need(v, "fps", "video.fps"), "video.fps", positive=True))


def _parse_text(v) -> list[TextEvent]:
    out = []
    for i, e in enumerate(_list(v if v is not None else [], "text")):
        e = _obj(e, f"text[{i}]")
        t = _num(_need(e, "t", f"text[{i}].t"), f"text[{i}].t")
        out.append(TextEvent(t, _str(_need(e, "text", f"text[{i}].text"), f"text[{i}].text")))
    return out


def _parse_words(v) -> list[Word]:
    out = []
    for i, w in enumerate(_list(v if v is not None else [], "words")):
        w = _obj(w, f"words[{i}]")
        for key in ("w", "start", "end"):
            _need(w, key, f"words[{i}].{key}")
        _str(w["w"], f"words[{i}].w")
        start, end = _num(w["start"], f"words[{i}].start"), _num(w["end"], f"words[{i}].end")
        if end < start:
            raise _Bad(f"words[{i}].end", f"end {end} is before start {start}")
        out.append(Word(w["w"], start, end, _str(w.get("speaker", "user"), f"words[{i}].speaker")))
    return out


def _parse_background(v) -> Background | None:
    if v is None:
        return None
    v = _obj(v, "background")
    return Background(_num(_need(v, "delay", "background.delay"), "background.delay"))


def _check_files(s: Scenario) -> None:
    """The files exist and their headers read as audio and video, so that a bad file stops a set before it runs,
    not at its scenario half-way through a bench (nothing is decoded here)."""
    from ..codecs.audio import AudioError, check_audio_file
    from ..codecs.video import VideoError, check_video_file

    for key, rel, check, error in (("audio", s.audio, check_audio_file, AudioError),
                                   ("video.path", s.video and s.video.path, check_video_file, VideoError)):
        if rel is None:
            continue
        try:
            if not s.path(rel).is_file():
                raise _Bad(key, f"file {rel!r} does not exist in the set")
            check(s.path(rel))
        except error as e:
            raise _Bad(key, str(e)) from None
        except OSError as e:  # a name too long for the file system, a folder without permission
            raise _Bad(key, f"file {rel!r}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------- sets
def validate_set(set_dir: str | Path) -> tuple[list[Scenario], list[str]]:
    """Read a set and check everything; returns (the good scenarios, one message per problem)."""
    set_dir = Path(set_dir)
    manifest = set_dir / MANIFEST
    if not manifest.is_file():
        return [], [f"{set_dir}: no {MANIFEST}"]
    try:
        # split on "\n" only: str.splitlines() would also cut at U+0085 / U+2028 inside JSON strings
        lines = manifest.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{manifest}: cannot read as UTF-8 text: {e}"]
    scenarios, errors, seen = [], [], {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{MANIFEST} line {no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: not valid JSON: {e.msg} at column {e.colno}")
            continue
        except RecursionError:
            errors.append(f"{where}: not valid JSON for a scenario: nested too deeply")
            continue
        try:
            s = Scenario.from_json(obj, root=set_dir, where=where)
        except ScenarioError as e:
            errors.append(str(e))
            continue
        except RecursionError:  # an unknown key's value nested too deeply to be written back
            errors.append(f"{where}: a value nested too deeply")
            continue
        if s.id in seen:
            errors.append(f"{where}, scenario {s.id!r}: field 'id': duplicate id (first on line {seen[s.id]})")
            continue
        seen[s.id] = no
        scenarios.append(s)
    if not scenarios and not errors:
        errors.append(f"{manifest}: the set holds no scenarios")
    return scenarios, errors


def read_set(set_dir: str | Path) -> list[Scenario]:
    """All scenarios of a set, in manifest order. Raises ScenarioError listing every problem."""
    scenarios, errors = validate_set(set_dir)
    if errors:
        shown = errors[:_MAX_REPORTED]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise ScenarioError(f"invalid scenario set {set_dir}:\n" + "\n".join(shown) + more, errors)
    return scenarios


def write_set(set_dir: str | Path, scenarios: list[Scenario], audio: dict | None = None, video: dict | None = None,
              *, rate: int = 16_000, video_format: str = "npy") -> list[Scenario]:
    """Write a set: the payloads, then ``manifest.jsonl``; returns the set as read back (so it is validated).

    ``audio``: id -> float waveform at ``rate`` (written as WAV at the scenario's ``audio`` path, or
    ``audio/<id>.wav``). ``video``: id -> frames uint8 [T, H, W, 3] or (frames, fps) (written at the scenario's
    ``video.path``, or ``video/<id>.npy`` / ``.mp4`` by ``video_format``).
    """
    if video_format not in ("npy", "mp4"):
        raise ValueError(f"video_format must be 'npy' or 'mp4', got {video_format!r}")
    set_dir = Path(set_dir)
    set_dir.mkdir(parents=True, exist_ok=True)
    audio, video, out = audio or {}, video or {}, []
    for s in scenarios:
        if s.id in audio:
            s = _write_audio(set_dir, s, audio[s.id], rate)
        if s.id in video:
            s = _write_video(set_dir, s, video[s.id], video_format)
        out.append(s)
    tmp = set_dir / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in out:
            f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, set_dir / MANIFEST)
    return read_set(set_dir)


def _write_audio(set_dir: Path, s: Scenario, wav, rate: int) -> Scenario:
    from ..codecs.audio import save_wav

    rel = s.audio or f"audio/{s.id}.wav"
    save_wav(set_dir / rel, np.asarray(wav, np.float32), rate)
    return replace(s, audio=rel)


def _write_video(set_dir: Path, s: Scenario, payload, video_format: str) -> Scenario:
    frames, fps = payload if isinstance(payload, tuple) else (payload, s.video.fps if s.video else None)
    if fps is None:
        raise ScenarioError(f"scenario {s.id!r}: field 'video.fps': no fps for the video payload")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ScenarioError(f"scenario {s.id!r}: field 'video': frames must be uint8 [T, H, W, 3], "
                            f"got {frames.dtype} {tuple(frames.shape)}")
    rel = s.video.path if s.video else f"video/{s.id}.{video_format}"
    p = set_dir / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".npy":
        np.save(p, frames, allow_pickle=False)
    else:
        from ..codecs.video import write_mp4

        write_mp4(p, frames, float(fps))
    return replace(s, video=Video(rel, float(fps)))


# ----------------------------------------------------------------------------------------------- input mode
def unknown_families(scenarios) -> Counter:
    """The families of these scenarios that are not the spec's, with their number of scenarios, in first-seen order."""
    return Counter(s.family for s in scenarios if s.family not in FAMILIES)


def is_instruction_family(family: str) -> bool:
    return family in INSTRUCTION_FAMILIES


def input_mode(scenario: Scenario, hear: Callable[[Scenario], float | None] | None = None) -> str:
    """'typed' when the scenario's first instruction is typed, else 'voice' (see the module docstring).
    ``hear``: when the user's speech starts in a scenario's audio (None: none heard), asked only of a scenario
    with audio and text but no word timings."""
    forced = scenario.extra.get("input")
    if forced in ("typed", "voice"):
        return forced
    if not scenario.text:
        return "voice"
    first_text = min(e.t for e in scenario.text)
    users = scenario.user_words
    if users:
        start = users[0].start
    else:
        start = hear(scenario) if hear is not None and scenario.audio is not None else None
    if start is None:
        return "typed"
    return "typed" if first_text <= start + 1e-6 else "voice"
