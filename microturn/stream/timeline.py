"""Timelines: one session on one clock, recorded (a real conversation) or planned (a synthetic training session).

On disk a timeline is a folder:
- ``audio.wav``: stereo, 16 kHz PCM16; channel 0 the agent, channel 1 the user (moshi-finetune's convention);
- ``timeline.json``: ``{"version": 1, "duration", "fps", "words": [{"w", "start", "end", "speaker"}],
  "text": [{"t", "text", "source"}], "events": [{"t", "kind", ...}], "meta": {...}}``;
- ``video.npy`` (optional): the user's camera, uint8 [T, H, W, 3] at ``fps`` from second 0.

``load_conversation`` reads a real two-speaker recording (stereo WAV, agent on channel 0) with word alignments in
this JSON or in moshi-finetune's ``{"alignments": [[word, [start, end], speaker], ...]}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codecs.audio import SAMPLE_RATE, AudioError, as_mono, load_wav, save_wav
from .words import Word

SOURCES = ("typed", "bg")  # typed user text, background-model results
EVENT_KINDS = ("delegate", "answer", "note", "heard", "rehearse", "recite", "timer")


class TimelineError(ValueError):
    """A timeline that cannot be used: malformed JSON, missing files, inconsistent fields."""


@dataclass
class TextEvent:
    t: float
    text: str
    source: str = "typed"

    def __post_init__(self):
        if self.source not in SOURCES:
            raise TimelineError(f"text event source must be one of {SOURCES}, got {self.source!r}")
        if not isinstance(self.text, str):
            raise TimelineError(f"text event text must be a string, got {self.text!r}")
        _check_time("text event t", self.t)


@dataclass
class Event:
    """Something the agent does that is not speech: ``delegate`` (it hands ``text``, the query, to the background
    model), ``answer`` (``text`` comes back), and its silent out tokens (training targets, never said): ``note``
    (it writes each word of ``text`` after a ``<note>``: the words of an instruction that lasts, or of a background
    answer it holds until it may say it), ``heard`` (it writes the heard token of ``text``, a cue-list word it has just
    heard, ``<heard:pencil>``: while it waits on a cue, each one the user says), ``rehearse`` (from ``t`` on its free
    out slots repeat the notes of
    ``text`` = "words" or "words; end" seconds), ``recite`` (the same for a background answer it holds, each round of
    its notes opened by ``<bg>``, so that where the answer starts is written and its first word is the one after the
    marker) and ``timer`` (from ``t`` on it counts down the micro-turns to
    ``text`` = "due" seconds, or "due end" when the countdown is called off at ``end``)."""

    t: float
    kind: str
    text: str = ""

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise TimelineError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        _check_time("event t", self.t)
        if self.kind == "timer":
            self.timer()  # checks its text
        if self.kind in ("rehearse", "recite"):
            self.rehearsal()

    def rehearsal(self) -> tuple[list[str], float]:
        """A rehearse or recite event's words and end (inf: the session's end)."""
        words, _, end = self.text.partition(";")
        try:
            until = float(end) if end.strip() else np.inf
        except ValueError:
            until = -1.0
        if not words.split() or not until >= self.t:
            raise TimelineError(f"{self.kind} event text must be 'words' or 'words; end' (end >= t = {self.t}), "
                                f"got {self.text!r}")
        return words.split(), until

    def timer(self) -> tuple[float, float]:
        """A timer event's (due, end) seconds (end: inf when it runs to the session's end or its due)."""
        try:
            v = [float(x) for x in self.text.split()]
        except ValueError:
            v = []
        if len(v) not in (1, 2) or not all(np.isfinite(x) or x == np.inf for x in v) or v[0] < self.t:
            raise TimelineError(f"timer event text must be 'due' or 'due end' seconds (due >= t = {self.t}), "
                                f"got {self.text!r}")
        return v[0], (v[1] if len(v) == 2 else np.inf)


def _check_time(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise TimelineError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass
class Timeline:
    duration: float
    user_audio: np.ndarray | None = None  # float32 mono, 16 kHz
    agent_audio: np.ndarray | None = None
    video: np.ndarray | None = None  # uint8 [T, H, W, 3]
    fps: float = 5.0
    words: list[Word] = field(default_factory=list)
    text: list[TextEvent] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_time("duration", self.duration)
        for name in ("user_audio", "agent_audio"):
            a = getattr(self, name)
            if a is not None:
                setattr(self, name, as_mono(a, allow_empty=True))
        if self.video is not None:
            v = np.asarray(self.video)
            if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
                raise TimelineError(f"video must be uint8 [T, H, W, 3], got {v.dtype} {v.shape}")
            if not (self.fps > 0):
                raise TimelineError(f"video fps must be > 0, got {self.fps}")

    def n_samples(self) -> int:
        return int(round(self.duration * SAMPLE_RATE))

    def track(self, name: str) -> np.ndarray:
        """The user or agent audio as exactly ``duration`` seconds (silence-padded or trimmed)."""
        a = getattr(self, f"{name}_audio")
        out = np.zeros(self.n_samples(), dtype=np.float32)
        if a is not None:
            n = min(len(a), len(out))
            out[:n] = a[:n]
        return out

    def words_of(self, speaker: str) -> list[Word]:
        return [w for w in self.words if w.speaker == speaker]

    def frame_at(self, t: float) -> np.ndarray | None:
        """The camera frame shown at second t (None when there is no video or it has ended)."""
        if self.video is None:
            return None
        i = int(np.floor(t * self.fps + 1e-9))
        return self.video[i] if 0 <= i < len(self.video) else None

    # ---- disk ----
    def to_json(self) -> dict:
        return {"version": 1, "duration": self.duration, "fps": self.fps,
                "words": [w.to_json() | {"speaker": w.speaker} for w in self.words],
                "text": [{"t": e.t, "text": e.text, "source": e.source} for e in self.text],
                "events": [{"t": e.t, "kind": e.kind, "text": e.text} for e in self.events],
                "meta": self.meta}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_wav(folder / "audio.wav", np.stack([self.track("agent"), self.track("user")], axis=1))
        (folder / "timeline.json").write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False))
        if self.video is not None:
            np.save(folder / "video.npy", self.video)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Timeline":
        folder = Path(folder)
        return load_conversation(folder / "audio.wav", folder / "timeline.json",
                                 video=folder / "video.npy" if (folder / "video.npy").exists() else None)


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TimelineError(f"timeline file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TimelineError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(d, dict):
        raise TimelineError(f"{path}: expected a JSON object at the top level, got {type(d).__name__}")
    return d


def _words_from(d: dict, path: Path) -> list[Word]:
    try:
        if "alignments" in d:  # moshi-finetune: [[word, [start, end], speaker], ...]; the main speaker is the agent
            return [Word(str(a[0]), float(a[1][0]), float(a[1][1]),
                         "agent" if a[2] == "SPEAKER_MAIN" else "user") for a in d["alignments"]]
        return [Word.from_json(w) for w in d.get("words", [])]
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise TimelineError(f"{path}: bad word alignment: {e}") from None


def load_conversation(wav: str | Path, alignments: str | Path, video: str | Path | None = None) -> Timeline:
    """A two-speaker recording: stereo WAV (channel 0 agent, channel 1 user, any rate) + word alignments JSON."""
    wav, alignments = Path(wav), Path(alignments)
    d = _read_json(alignments)
    try:
        audio = load_wav(wav, channel=None)
    except AudioError as e:
        raise TimelineError(str(e)) from None
    if audio.shape[1] != 2:
        raise TimelineError(f"{wav}: a conversation must be stereo (agent, user), got {audio.shape[1]} channel(s)")
    words = _words_from(d, alignments)
    duration = float(d.get("duration", audio.shape[0] / SAMPLE_RATE))
    try:
        text = [TextEvent(float(e["t"]), e["text"], e.get("source", "typed")) for e in d.get("text", [])]
        events = [Event(float(e["t"]), e["kind"], e.get("text", "")) for e in d.get("events", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise TimelineError(f"{alignments}: bad text or event entry: {e}") from None
    frames = None
    if video is not None:
        frames = np.load(video)
    return Timeline(duration=duration, user_audio=audio[:, 1], agent_audio=audio[:, 0], video=frames,
                    fps=float(d.get("fps", 5.0)), words=words, text=text, events=events, meta=d.get("meta", {}))
