"""espeak-ng through its C library (ctypes): every call in a freshly loaded private copy of the library (see the
package's Determinism); generated variants and accents, voice files of our own."""
from __future__ import annotations

import _ctypes
import ctypes
import math
import os
from pathlib import Path

import numpy as np

from microturn.data.speech import base
from microturn.data.speech.base import LIBC, Raw, seed
from microturn.data.speech.voice import Voice, espeak_data_dir, parse_generated

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
        data = espeak_data_dir()
        lang = [p for p in (data / "lang").rglob("*") if p.is_file() and p.name.lower() == base] if data else []
        if not lang:
            raise RuntimeError(f"espeak-ng's language file for {base!r} not found (is espeak-ng-data installed?)")
        text = "\n".join(line for line in lang[0].read_text().splitlines() if not line.startswith("name "))
        n, accent = parse_generated(variant)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text + "\n" + generated_variant(n) + (generated_accent(n) if accent else ""))
        os.replace(tmp, path)  # atomic: parallel workers may write the same file
    return str(path).encode()


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


class Espeak:
    """espeak-ng through a private copy of libespeak-ng, loaded fresh for every call (the package docstring:
    Determinism)."""

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
        if parse_generated(voice.variant):
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

    def synth(self, text: str, voice: Voice) -> Raw:
        data = text.encode("utf-8")
        with base.LOCK:
            self._chunks, self._events = [], []
            lib, rate = self._open()
            try:
                self._configure(lib, voice)
                LIBC.srand(seed(text, voice))
                err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                self._close(lib)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with code {err}")
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        return Raw(audio, rate, self._pieces(events, len(audio), rate))

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
