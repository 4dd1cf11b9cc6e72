"""What every speech engine shares: the written words of a text, an engine's raw result, the seed of its noise, one
lock for the C libraries (see the package's Determinism), and the Token alignment flite and festival both give."""
from __future__ import annotations

import ctypes
import os
import re
import threading
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from microturn.data.speech.voice import Voice


@dataclass(frozen=True)
class Token:
    """A written word: its text and its character span [start, end) in the input."""
    text: str
    start: int
    end: int


def written_words(text: str) -> list[Token]:
    """Whitespace-separated chunks with edge punctuation stripped; chunks without letters or digits are dropped."""
    out = []
    for m in re.finditer(r"\S+", text):
        a, b = m.start(), m.end()
        while a < b and not text[a].isalnum():
            a += 1
        while b > a and not text[b - 1].isalnum():
            b -= 1
        if a < b:
            out.append(Token(text[a:b], a, b))
    return out


def split_words(text: str) -> list[str]:
    """The written words of ``text``, as :func:`synthesize` reports them (see the package docstring)."""
    return [t.text for t in written_words(text)]


@dataclass
class Raw:
    """What an engine returns: int16-scaled audio at its own rate and timed pieces of speech.

    pieces: (character offset in the text, start s, end s) per spoken engine word, in order.
    """
    audio: np.ndarray
    rate: int
    pieces: list[tuple[int, float, float]] = field(default_factory=list)


def seed(text: str, voice: Voice) -> int:
    """The seed of an engine's noise for ``text`` in ``voice`` (libc's rand for espeak-ng and flite, numpy's for
    Piper): the same text in the same voice gives the same audio."""
    return zlib.crc32(f"{voice.id}\n{text}".encode("utf-8")) & 0x7FFFFFFF


LIBC = ctypes.CDLL(None)
LIBC.srand.argtypes = [ctypes.c_uint]
LOCK = threading.Lock()  # one synthesis at a time per process (see Determinism); use it as base.LOCK


def _fresh_lock_after_fork():
    global LOCK
    LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def token_pieces(tokens, ascii_text: str, origin: list[int]) -> list[tuple[int, float, float]]:
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


def ascii_with_offsets(text: str) -> tuple[str, list[int]]:
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
