"""The native microturn WebSocket protocol (version 1): parse and validate client messages, encode server messages.

Pure functions over bytes and dicts, no I/O, so the parser can be fuzzed: ``parse`` raises nothing but
``ProtocolError`` (with a machine-readable ``code``) whatever it is given. The wire format is documented in
``docs/protocol.md``.

Client -> server: binary frames are PCM16 mono little-endian audio at the rate declared in ``session.start``; text
frames are JSON objects with a ``type``: ``session.start``, ``text``, ``frame``, ``session.end``.
Server -> client: binary frames are agent audio (a 16-byte header, then PCM16 mono 16 kHz); text frames are JSON:
``hello``, ``session.started``, ``text.delta``, ``word``, ``event``, ``stats``, ``error``, ``session.ended``.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass

from ..stream.tokenizer import check_text

VERSION = 1
MAX_MESSAGE = 1 << 20  # bytes: larger messages are refused with an error (the session goes on)
MAX_TEXT = 2000  # characters of one typed text message
MAX_IMAGE_SIDE = 2048  # pixels: larger camera frames are refused before decoding
MIN_RATE, MAX_RATE = 8000, 48000  # accepted input sample rates (resampled to 16 kHz)
OUT_RATE = 16000  # agent audio rate of the native protocol
AUDIO_MAGIC = b"MTAU"
AUDIO_HEADER = struct.Struct("<4sIII")  # magic, micro-turn t, start of the window in ms, flags
FLAG_VOICED = 1  # the window holds agent speech (otherwise it is silence)


class ProtocolError(ValueError):
    """A client message that cannot be used. ``code`` names the problem for programs, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- client messages
@dataclass(frozen=True)
class AudioIn:
    """A chunk of PCM16 mono little-endian audio (an even number of bytes, possibly zero)."""

    pcm: bytes


@dataclass(frozen=True)
class SessionStart:
    sample_rate: int = 16000
    token: str | None = None
    version: int = VERSION


@dataclass(frozen=True)
class TextIn:
    text: str


@dataclass(frozen=True)
class FrameIn:
    """A camera frame: JPEG bytes (checked for the JPEG signature, not yet decoded); None: the camera is off."""

    jpeg: bytes | None


@dataclass(frozen=True)
class SessionEnd:
    pass


Message = AudioIn | SessionStart | TextIn | FrameIn | SessionEnd


def parse(data: bytes | str) -> Message:
    """One WebSocket message (bytes for a binary frame, str for a text frame) -> a validated message."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        _check_size(len(data))
        if len(data) % 2:
            raise ProtocolError("bad_audio", f"audio must be PCM16 (2 bytes per sample), got {len(data)} bytes")
        return AudioIn(data)
    if not isinstance(data, str):
        raise ProtocolError("bad_message", f"expected a binary or text frame, got {type(data).__name__}")
    _check_size(len(data))  # characters <= bytes, and a cheap first guard
    return parse_json(load_json(data))


def _check_size(n: int) -> None:
    if n > MAX_MESSAGE:
        raise ProtocolError("too_large", f"message of {n} bytes is over the limit of {MAX_MESSAGE} bytes")


def load_json(text: str) -> dict:
    """Decode a JSON object with a string ``type``; anything else is a ``bad_json`` error."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError("bad_json", f"message is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"message must be a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("bad_message", "message must have a string field 'type'")
    return obj


def parse_json(obj: dict) -> Message:
    kind = obj["type"]
    if kind == "session.start":
        return SessionStart(sample_rate=_rate(obj.get("sample_rate", 16000)), token=_token(obj.get("token")),
                            version=_version(obj.get("version", VERSION)))
    if kind == "text":
        return TextIn(text_field(obj.get("text")))
    if kind == "frame":
        return FrameIn(None if "jpeg" in obj and obj["jpeg"] is None else jpeg_field(obj.get("jpeg")))
    if kind == "session.end":
        return SessionEnd()
    raise ProtocolError("unknown_type", f"unknown message type {kind[:64]!r}; expected session.start, text, frame "
                                        "or session.end")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def show(v) -> str:
    """A short, safe description of a client value for error messages."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e30:
        return repr(v)
    if isinstance(v, str):
        return repr(v[:32])
    return type(v).__name__


def _rate(v) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _int(v) or not MIN_RATE <= v <= MAX_RATE:
        raise ProtocolError("bad_rate", f"sample_rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz, "
                                        f"got {show(v)}")
    return v


def _version(v) -> int:
    if v != VERSION or not _int(v):
        raise ProtocolError("bad_version", f"this server speaks protocol version {VERSION}, client asked for "
                                           f"{show(v)}")
    return v


def _token(v) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 4096:
        raise ProtocolError("bad_message", "token must be a string (at most 4096 characters)")
    return v


def text_field(v) -> str:
    """Typed text: a non-empty string of at most ``MAX_TEXT`` characters."""
    if not isinstance(v, str) or not v.strip():
        raise ProtocolError("bad_text", "text must be a non-empty string")
    if len(v) > MAX_TEXT:
        raise ProtocolError("bad_text", f"text of {len(v)} characters is over the limit of {MAX_TEXT}")
    try:
        return check_text(v)
    except ValueError as e:
        raise ProtocolError("bad_text", str(e)) from None


def b64_field(v, name: str) -> bytes:
    if not isinstance(v, str) or not v:
        raise ProtocolError("bad_message", f"{name} must be a non-empty base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError("bad_base64", f"{name} is not valid base64: {e}") from None


def jpeg_field(v) -> bytes:
    data = b64_field(v, "jpeg")
    if not data.startswith(b"\xff\xd8\xff"):
        raise ProtocolError("bad_frame", "frame.jpeg is not a JPEG image (no JPEG signature)")
    return data


# ---------------------------------------------------------------- server messages
def encode(kind: str, /, **fields) -> str:
    """A JSON server message of type ``kind`` (positional only: "event" messages carry a field named kind);
    non-finite floats become null so the JSON stays valid."""
    return json.dumps({"type": kind, **{k: _finite(v) for k, v in fields.items()}}, separators=(",", ":"))


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def hello(**fields) -> str:
    return encode("hello", version=VERSION, server="microturn", **fields)


def error(code: str, message: str, fatal: bool = False) -> str:
    return encode("error", code=code, message=message, fatal=fatal)


def audio_frame(t: int, start_ms: int, pcm16: bytes, voiced: bool) -> bytes:
    """Agent audio of micro-turn ``t``'s output window: header + PCM16 mono 16 kHz."""
    return AUDIO_HEADER.pack(AUDIO_MAGIC, t, start_ms, FLAG_VOICED if voiced else 0) + pcm16


def parse_audio_frame(data: bytes) -> tuple[int, int, bool, bytes]:
    """The inverse of ``audio_frame`` (for clients and tests): (t, start_ms, voiced, pcm16)."""
    if len(data) < AUDIO_HEADER.size:
        raise ProtocolError("bad_audio", "audio frame shorter than its header")
    magic, t, start_ms, flags = AUDIO_HEADER.unpack_from(data)
    if magic != AUDIO_MAGIC:
        raise ProtocolError("bad_audio", f"audio frame magic {magic!r} is not {AUDIO_MAGIC!r}")
    return t, start_ms, bool(flags & FLAG_VOICED), data[AUDIO_HEADER.size :]


def decode_jpeg(data: bytes):
    """JPEG bytes -> RGB uint8 [H, W, 3] (PyAV). Raises ``ProtocolError('bad_frame')`` for anything unusable,
    including images over ``MAX_IMAGE_SIDE`` pixels a side (checked before decoding)."""
    import io

    import av

    try:
        with av.open(io.BytesIO(data), format="image2pipe") as container:
            streams = container.streams.video
            if not streams or streams[0].codec_context.name != "mjpeg":
                raise ProtocolError("bad_frame", "frame.jpeg is not a JPEG image")
            cc = streams[0].codec_context
            if max(cc.width, cc.height) > MAX_IMAGE_SIDE:
                raise ProtocolError("bad_frame", f"frame of {cc.width}x{cc.height} is over the limit of "
                                                 f"{MAX_IMAGE_SIDE} pixels a side")
            for frame in container.decode(video=0):
                rgb = frame.to_ndarray(format="rgb24")
                if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
                    break
                return rgb
    except ProtocolError:
        raise
    except Exception as e:  # PyAV raises many error types for broken data
        raise ProtocolError("bad_frame", f"cannot decode the JPEG frame: {e}") from None
    raise ProtocolError("bad_frame", "the JPEG frame holds no image")
