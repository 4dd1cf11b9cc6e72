"""Video file I/O (PyAV), the project's only video I/O, with clear errors for bad input.

Frames inside microturn are uint8 RGB arrays of shape [T, H, W, 3]. A scenario's camera shows frame ``i``
during seconds ``[i / fps, (i + 1) / fps)`` and nothing after the last frame (see ``frame_at``).

* ``read_frames(path)``: ``.npy`` (uint8 [T, H, W, 3]; no fps stored, so fps is ``None``) or any container
  PyAV opens (``.mp4``, ``.webm``, ``.avi``, ...; fps from the stream when it has one).
* ``write_mp4(path, frames, fps)``: H.264 (libx264; mpeg4 when PyAV's ffmpeg lacks it), yuv420p. Odd sizes
  are padded to even by repeating the last row/column; the original size is kept in the file's metadata and
  ``read_frames`` crops back to it.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoError(ValueError):
    """Raised for video the project cannot use: wrong dtype/shape, empty, bad fps, unreadable file."""


_SIZE_TAG = "microturn-size"  # metadata key holding "WxH" when write_mp4 padded odd dimensions
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def check_fps(fps) -> float:
    """Validate a frame rate: a finite number > 0 (fractional allowed, e.g. 5.0 or 29.97). Returns float."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating, Fraction)):
        raise VideoError(f"fps must be a number, got {fps!r}")
    f = float(fps)
    if not math.isfinite(f) or not (0.0 < f <= 1000.0):
        raise VideoError(f"fps must be a finite number in (0, 1000], got {fps!r}")
    return f


def as_frames(x, *, what: str = "frames") -> np.ndarray:
    """Validate video frames: uint8 of shape [T, H, W, 3] with T, H, W >= 1. Returns them as a numpy array."""
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise VideoError(f"{what}: expected dtype uint8 (RGB 0..255), got {a.dtype}")
    if a.ndim != 4 or a.shape[-1] != 3:
        raise VideoError(f"{what}: expected shape [T, H, W, 3] (RGB), got {a.shape}")
    if 0 in a.shape:
        raise VideoError(f"{what}: video is empty (shape {a.shape})")
    return a


def read_frames(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a video file; returns (frames uint8 [T, H, W, 3] RGB, fps or None when the file stores none).

    ``.npy`` files never store fps (the caller supplies it, e.g. from the scenario's ``video.fps``).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"cannot read video file {path}: no such file")
    if path.suffix.lower() == ".npy":
        return _read_npy(path), None
    return _read_container(path)


def check_video_file(path: str | Path) -> None:
    """Raise VideoError when ``read_frames`` could not read the file, as far as that shows without decoding it: a
    ``.npy``'s header (uint8 [T, H, W, 3], not empty), a container's video stream (a stream that fails to decode is
    found when it is read)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise VideoError(f"cannot read video file {path}: {e}") from e
        as_frames(a, what=str(path))
        return
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise VideoError(f"video file {path} has no video stream")
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(f"cannot read video file {path}: {e}") from e


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # bad header, pickled object, truncated file
        raise VideoError(f"cannot read video file {path}: {e}") from e
    return as_frames(a, what=str(path))


def _read_container(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise VideoError(f"video file {path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            size = _stored_size(container.metadata) or _stored_size(stream.metadata)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except VideoError:
        raise
    except Exception as e:  # av.error.* (InvalidDataError, ...) and decoder failures
        raise VideoError(f"cannot read video file {path}: {e}") from e
    if not frames:
        raise VideoError(f"video file {path} contains no frames")
    out = np.stack(frames)
    if size is not None and size[0] <= out.shape[2] and size[1] <= out.shape[1]:
        out = np.ascontiguousarray(out[:, : size[1], : size[0]])
    fps = float(rate) if rate else None
    return as_frames(out, what=str(path)), fps


def _stored_size(metadata) -> tuple[int, int] | None:
    """The (width, height) write_mp4 recorded before padding to even, if any."""
    for key, value in dict(metadata or {}).items():
        if key.lower() in (_SIZE_TAG, "comment"):
            m = _SIZE_RE.match(str(value).replace(f"{_SIZE_TAG}=", ""))
            if m:
                return int(m.group(1)), int(m.group(2))
    return None


def _codec_name() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad H and W to even sizes by repeating the last row/column (yuv420p needs even dimensions)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(path: str | Path, frames, fps: float, *, quality: int = 18) -> Path:
    """Write frames uint8 [T, H, W, 3] RGB as an H.264 (or mpeg4) yuv420p MP4 at ``fps`` (may be fractional).

    ``quality``: x264 CRF (lower = better; 18 is visually lossless). Returns the path written.
    """
    frames = as_frames(frames)
    fps = check_fps(fps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = frames.shape
    padded = _pad_even(frames)
    rate = Fraction(fps).limit_denominator(1001)
    codec = _codec_name()
    with av.open(str(path), mode="w", format="mp4") as container:
        if padded.shape[1:3] != frames.shape[1:3]:
            container.metadata["comment"] = f"{_SIZE_TAG}={w}x{h}"
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = padded.shape[2], padded.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(int(quality)), "preset": "medium"}
        else:
            stream.bit_rate = max(200_000, int(padded.shape[1] * padded.shape[2] * fps * 2))
        for i, frame in enumerate(padded):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_index(n_frames: int, fps: float, t: float) -> int | None:
    """Index of the frame the camera shows at second ``t``, or None before 0 and after the last frame."""
    fps = check_fps(fps)
    if not math.isfinite(t) or t < 0:
        return None
    i = int(math.floor(t * fps + 1e-6))  # tolerate float error at exact frame boundaries (0.2 s * 5 fps)
    return i if i < n_frames else None


def frame_at(frames: np.ndarray, fps: float, t: float) -> np.ndarray | None:
    """The frame shown at second ``t`` (frame i covers [i/fps, (i+1)/fps)); None after the last frame."""
    i = frame_index(len(frames), fps, t)
    return None if i is None else frames[i]
