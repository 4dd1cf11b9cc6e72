"""flite through its C libraries (ctypes): the utterance structure's Token relation gives every written word's
phones, so the alignment is the engine's own."""
from __future__ import annotations

import ctypes

import numpy as np

from microturn.data.speech import base
from microturn.data.speech.base import LIBC, Raw, ascii_with_offsets, seed, token_pieces
from microturn.data.speech.voice import Voice


class _FliteVoiceStruct(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p), ("ffunctions", ctypes.c_void_p)]


class _FliteWave(ctypes.Structure):
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


# flite stores feature *names* by pointer without copying them: keep them alive for the life of the process.
_FLITE_NAMES = {k: ctypes.create_string_buffer(k.encode()) for k in ("duration_stretch", "f0_shift")}
_WORD_START = b"R:SylStructure.daughter1.daughter1.R:Segment.p.end"
_WORD_END = b"R:SylStructure.daughtern.daughtern.R:Segment.end"


class Flite:
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

    def synth(self, text: str, voice: Voice) -> Raw:
        ascii_text, origin = ascii_with_offsets(text)
        with base.LOCK:
            lib = self._load()
            vptr, stretch = self._voice(voice.name)
            feats = _FliteVoiceStruct.from_address(vptr).features
            lib.flite_feat_set_float(feats, _FLITE_NAMES["duration_stretch"], stretch / voice.rate)
            lib.flite_feat_set_float(feats, _FLITE_NAMES["f0_shift"], voice.pitch)
            LIBC.srand(seed(text, voice))
            utt = lib.flite_synth_text(ascii_text.encode("ascii"), vptr)
            if not utt:
                raise RuntimeError("flite_synth_text failed")
            try:
                wave = lib.utt_wave(utt).contents
                audio = np.ctypeslib.as_array(wave.samples, (wave.num_samples,)).astype(np.float32) \
                    if wave.num_samples > 0 else np.zeros(0, np.float32)
                rate = wave.sample_rate
                pieces = token_pieces(self._tokens(lib, utt), ascii_text, origin)
            finally:
                lib.delete_utterance(utt)
        return Raw(audio, rate, pieces)

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
