"""A spoken or typed word on the session clock: the unit shared by timelines, scenario sets and bench reports."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Word:
    w: str
    start: float
    end: float
    speaker: str = "user"

    def __post_init__(self):
        if not isinstance(self.w, str):
            raise ValueError(f"word text must be a string, got {self.w!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"word {self.w!r}: {name} must be a finite number, got {v!r}")
        if self.end < self.start:
            raise ValueError(f"word {self.w!r}: end {self.end} is before start {self.start}")

    def to_json(self) -> dict:
        d = asdict(self)
        if d["speaker"] == "user":
            del d["speaker"]
        return d

    @classmethod
    def from_json(cls, d: dict, default_speaker: str = "user") -> "Word":
        if not isinstance(d, dict):
            raise ValueError(f"a word must be an object, got {d!r}")
        missing = [k for k in ("w", "start", "end") if k not in d]
        if missing:
            raise ValueError(f"word {d!r} lacks {', '.join(missing)}")
        return cls(d["w"], float(d["start"]) if not isinstance(d["start"], bool) else d["start"],
                   float(d["end"]) if not isinstance(d["end"], bool) else d["end"], d.get("speaker", default_speaker))

    def shifted(self, dt: float) -> "Word":
        return Word(self.w, self.start + dt, self.end + dt, self.speaker)
