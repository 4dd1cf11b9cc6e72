"""Synthetic camera video of repeated movements, for the repcount family ("Count my reps.").

``render_reps(rng, kind=..., n_reps=...)`` draws a scene with numpy only (anti-aliased thick lines and discs
from distance fields) and returns a ``RepVideo``: uint8 frames [T, H, W, 3], fps, and the second each rep
completes (the movement is back at its rest pose). The figure rests before the first rep and after the last.

Kinds (``KINDS``), all readable at 80x80 and 5 fps:

* ``squat``    stick figure (front view) lowers its hips, knees bend outwards, arms rise forward a little
* ``arms``     stick figure (front view) raises both arms sideways, up to shoulder height or overhead
* ``pendulum`` a weight on a rod hangs from a beam and swings up to one side and back (kettlebell-like)
* ``jump``     stick figure (front view) jumps, tucking its legs and lifting its arms
* ``curl``     stick figure (side view) curls a dumbbell: the forearm rotates up about the elbow and back

Each call varies: base period (1.2-3.0 s) with per-rep jitter and amplitude, pauses between reps, start time,
rest after the last rep, movement asymmetry, body proportions, figure position/scale/line width/colours,
background colour and texture, and (unless ``clean=True``) distractors: a small object drifting across,
lighting flicker, camera shake, gaussian pixel noise. Same rng state -> same video.

Held-out split (``split="test"``): hues are drawn from twelve 30-degree sectors, train from the even sectors
and test from the odd ones; background textures are flat/gradient/stripes/blobs for train and
checker/waves for test. Kinds are shared by both splits.

Run ``python -m microturn.data.video [out.png] [--split test]`` to write a contact sheet for a human to look at.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

KINDS = ("squat", "arms", "pendulum", "jump", "curl")
SPLITS = ("train", "test")
MIN_PERIOD = 1.2  # seconds; at 5 fps a rep spans >= 6 frames
TEXTURES = {"train": ("flat", "gradient", "stripes", "blobs"), "test": ("checker", "waves")}
_SHAKE_MARGIN = 3  # px of extra background around the frame so camera shake never shows an edge


@dataclass
class RepVideo:
    """A rendered clip. ``frames[i]`` shows second ``i / fps``; ``rep_times[k]`` = end of rep k (seconds)."""

    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float
    rep_times: list[float]  # second each rep completes (movement back at rest pose)
    duration: float  # T / fps
    kind: str
    rep_starts: list[float] = field(default_factory=list)  # second each rep begins
    motion: np.ndarray | None = None  # float32 [T]: 0 at rest .. ~1 at the peak of a rep (ground truth)

    @property
    def n_reps(self) -> int:
        return len(self.rep_times)


# ----------------------------------------------------------------------------------------------- timing


def _as_range(x, name: str) -> tuple[float, float]:
    lo, hi = (float(x), float(x)) if np.isscalar(x) else (float(x[0]), float(x[1]))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
        raise ValueError(f"{name}: expected a number >= 0 or a range (lo, hi) with 0 <= lo <= hi, got {x!r}")
    return lo, hi


def _schedule(rng, n_reps, start, period, jitter, pause, tail, duration):
    """Rep start times and periods (rounded to 10 ms), and the clip duration."""
    p_lo, p_hi = _as_range(period, "period")
    if p_lo < MIN_PERIOD:
        raise ValueError(f"period must be >= {MIN_PERIOD} s so each rep spans enough frames, got {period!r}")
    base = rng.uniform(p_lo, p_hi)
    pause_lo, pause_hi = _as_range(pause, "pause")
    t = float(rng.uniform(0.5, 3.0) if start is None else start)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"start must be a finite number >= 0, got {start!r}")
    starts, periods = [], []
    for k in range(n_reps):
        if k:
            t += rng.uniform(pause_lo, pause_hi)
        p = float(np.clip(base * (1.0 + jitter * rng.standard_normal()), MIN_PERIOD, max(p_hi, MIN_PERIOD) * 1.2))
        t, p = round(t, 2), round(p, 2)
        starts.append(t)
        periods.append(p)
        t += p
    end = t
    if duration is None:
        tail_lo, tail_hi = _as_range((0.8, 2.0) if tail is None else tail, "tail")
        duration = end + rng.uniform(tail_lo, tail_hi)
    elif duration < end + 0.4:
        raise ValueError(f"duration {duration} s is too short: the last rep ends at {end:.2f} s (need 0.4 s after)")
    return starts, periods, float(duration)


def _rep_profile(u: np.ndarray, peak_at: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 over u in [0, 1], peaking at ``peak_at`` (half-cosine up, half-cosine down)."""
    up = 0.5 * (1.0 - np.cos(np.pi * np.clip(u / peak_at, 0, 1)))
    down = 0.5 * (1.0 + np.cos(np.pi * np.clip((u - peak_at) / (1.0 - peak_at), 0, 1)))
    return np.where(u < peak_at, up, down) * ((u >= 0) & (u <= 1))


def _motion(times, starts, periods, amps, peak_at) -> np.ndarray:
    """Pose parameter s(t) per frame: 0 at rest, amp_k * profile inside rep k."""
    s = np.zeros(len(times), np.float32)
    for st, p, a in zip(starts, periods, amps):
        inside = (times >= st) & (times <= st + p)
        s[inside] = a * _rep_profile((times[inside] - st) / p, peak_at)
    return s


# --------------------------------------------------------------------------------------------- figures
# Poses are in figure units: y up, origin on the ground between the feet, standing height ~1.
# A pose is a list of primitives: ("seg", layer, x0, y0, x1, y1) and ("disc", layer, cx, cy, r).
# Layer "body" is drawn in the figure colour, "prop" (dumbbell, weight) in a second colour.


def _body_params(rng) -> dict:
    j = lambda v: v * rng.uniform(0.93, 1.07)  # noqa: E731 - per-video proportions
    return dict(thigh=j(0.26), shin=j(0.26), torso=j(0.30), upper=j(0.17), fore=j(0.16), head_r=j(0.075),
                hip_w=j(0.05), foot_w=j(0.09), shoulder_w=j(0.09), neck=j(0.03))


def _knee(hip, ankle, l1, l2, out: float):
    """Two-link inverse kinematics: the knee between hip and ankle, bent towards x-direction ``out``."""
    hx, hy = hip
    ax, ay = ankle
    dx, dy = ax - hx, ay - hy
    d = min(math.hypot(dx, dy), l1 + l2 - 1e-6)
    a = (l1 * l1 - l2 * l2 + d * d) / (2 * d)
    h = math.sqrt(max(l1 * l1 - a * a, 0.0))
    ux, uy = dx / d, dy / d
    nx, ny = -uy, ux
    if nx * out < 0:
        nx, ny = -nx, -ny
    return hx + a * ux + h * nx, hy + a * uy + h * ny


def _limb(start, angle: float, length: float, side: float):
    """End of a limb from ``start`` at ``angle`` radians from straight down, towards x-direction ``side``."""
    return start[0] + side * length * math.sin(angle), start[1] - length * math.cos(angle)


def _front_figure(b, *, hip_y, lift=0.0, feet_up=0.0, arm_angle=0.0, elbow=0.0, head_disc=True):
    """Front-view stick figure: two legs (knees bent outwards by IK), torso, shoulders, arms, head.

    ``arm_angle``: radians from straight down, away from the body (arms at rest hang slightly apart).
    """
    prims = []
    hips = [(-b["hip_w"], hip_y + lift), (b["hip_w"], hip_y + lift)]
    for side, hip in zip((-1, 1), hips):
        ankle = (side * b["foot_w"], lift + feet_up)
        knee = _knee(hip, ankle, b["thigh"], b["shin"], side)
        prims += [("seg", "body", *hip, *knee), ("seg", "body", *knee, *ankle)]
    pelvis_y = hip_y + lift
    neck_y = pelvis_y + b["torso"]
    prims += [("seg", "body", hips[0][0], pelvis_y, hips[1][0], pelvis_y), ("seg", "body", 0, pelvis_y, 0, neck_y),
              ("seg", "body", -b["shoulder_w"], neck_y, b["shoulder_w"], neck_y)]
    for side in (-1, 1):
        sh = (side * b["shoulder_w"], neck_y)
        el = _limb(sh, arm_angle, b["upper"], side)
        wr = _limb(el, arm_angle + elbow, b["fore"], side)
        prims += [("seg", "body", *sh, *el), ("seg", "body", *el, *wr)]
    prims.append(("disc" if head_disc else "ring", "body", 0, neck_y + b["neck"] + b["head_r"], b["head_r"]))
    return prims


def _standing_hip_y(b) -> float:
    return math.sqrt((b["thigh"] + b["shin"]) ** 2 - (b["foot_w"] - b["hip_w"]) ** 2) - 1e-3


def _arm(s, v) -> float:
    """Arm angle: from the rest angle at s=0 to the peak at s=1."""
    return v["arm_rest"] + (v["arm_peak"] - v["arm_rest"]) * s


def _pose_squat(s, b, v):
    hip_y = _standing_hip_y(b) - v["depth"] * s
    return _front_figure(b, hip_y=hip_y, arm_angle=_arm(s, v), head_disc=v["head_disc"])


def _pose_arms(s, b, v):
    return _front_figure(b, hip_y=_standing_hip_y(b), arm_angle=_arm(s, v), elbow=v["elbow"] * s,
                         head_disc=v["head_disc"])


def _pose_jump(s, b, v):
    return _front_figure(b, hip_y=_standing_hip_y(b), lift=v["height"] * s, feet_up=v["tuck"] * s,
                         arm_angle=_arm(s, v), head_disc=v["head_disc"])


def _pose_curl(s, b, v):
    """Side view facing x-direction ``face``: legs, torso, head, one arm curling a dumbbell."""
    f = v["face"]
    hip_y = b["thigh"] + b["shin"]
    neck_y = hip_y + b["torso"]
    prims = [("seg", "body", 0, hip_y, 0.05 * f, 0), ("seg", "body", 0, hip_y, -0.04 * f, 0),
             ("seg", "body", 0.05 * f, 0, 0.12 * f, 0), ("seg", "body", 0, hip_y, 0, neck_y),
             ("disc" if v["head_disc"] else "ring", "body", 0.02 * f, neck_y + b["neck"] + b["head_r"], b["head_r"])]
    sh = (0.0, neck_y - 0.02)
    el = _limb(sh, v["upper_angle"], b["upper"], f)
    wr = _limb(el, v["upper_angle"] + v["curl_peak"] * s, b["fore"], f)
    prims += [("seg", "body", *sh, *el), ("seg", "body", *el, *wr), ("disc", "prop", *wr, v["weight_r"])]
    return prims


def _pose_pendulum(s, b, v):
    """A beam, a rod hanging from its middle, a weight at the end; swings up to one side and back."""
    angle = v["swing_peak"] * s
    pivot = (0.0, 1.0)
    bob = _limb(pivot, angle, v["rod"], v["face"])
    return [("seg", "body", -0.2, 1.05, 0.2, 1.05), ("seg", "body", 0.0, 1.05, *pivot), ("seg", "body", *pivot, *bob), ("disc", "prop", *bob, v["weight_r"])]


_POSES: dict[str, Callable] = {"squat": _pose_squat, "arms": _pose_arms, "pendulum": _pose_pendulum,
                               "jump": _pose_jump, "curl": _pose_curl}


def _kind_params(rng, kind: str) -> dict:
    """Per-video movement style (peak angles, depth, facing)."""
    arm_peak = {"arms": (95, 170), "squat": (50, 90), "jump": (60, 160)}.get(kind, (0, 0))
    return dict(depth=rng.uniform(0.16, 0.24), arm_rest=math.radians(rng.uniform(10, 22)),
                arm_peak=math.radians(rng.uniform(*arm_peak)), elbow=math.radians(rng.uniform(-20, 10)),
                height=rng.uniform(0.18, 0.3), tuck=rng.uniform(0.05, 0.12),
                upper_angle=math.radians(rng.uniform(12, 22)), curl_peak=math.radians(rng.uniform(110, 140)),
                swing_peak=math.radians(rng.uniform(45, 85)), rod=rng.uniform(0.55, 0.75),
                weight_r=rng.uniform(0.05, 0.065) if kind == "curl" else rng.uniform(0.07, 0.11),
                face=float(rng.choice([-1.0, 1.0])), head_disc=bool(rng.random() < 0.6))


def _extent(prims) -> np.ndarray:
    """[xmin, ymin, xmax, ymax] of a pose (figure units, ignoring line width)."""
    xs, ys = [], []
    for p in prims:
        if p[0] == "seg":
            xs += [p[2], p[4]]
            ys += [p[3], p[5]]
        else:
            xs += [p[2] - p[4], p[2] + p[4]]
            ys += [p[3] - p[4], p[3] + p[4]]
    return np.array([min(xs), min(ys), max(xs), max(ys)])


# ---------------------------------------------------------------------------------------------- colours


def _hue(rng, split: str) -> float:
    """A hue from the split's 30-degree sectors (train: even sectors, test: odd)."""
    sector = 2 * rng.integers(6) + (split == "test")
    return (sector + rng.uniform(0.1, 0.9)) / 12.0


def _rgb(h, l, s) -> np.ndarray:
    return np.array(colorsys.hls_to_rgb(h % 1.0, float(np.clip(l, 0, 1)), float(np.clip(s, 0, 1))), np.float32)


def _palette(rng, split: str) -> dict:
    """Wall, floor, figure and prop colours; the figure and prop differ from the wall by >= 0.35 in lightness."""
    wall_l = rng.uniform(0.15, 0.85)
    fig_l = wall_l + rng.choice([-1, 1]) * rng.uniform(0.38, 0.55)
    if not 0.05 <= fig_l <= 0.95:
        fig_l = wall_l - np.sign(fig_l - wall_l) * rng.uniform(0.38, 0.55)
    fig_l = float(np.clip(fig_l, 0.03, 0.97))
    prop_l = float(np.clip(fig_l + rng.uniform(-0.1, 0.1), 0.03, 0.97))
    floor_l = wall_l + rng.uniform(-0.12, 0.12)
    return dict(wall=_rgb(_hue(rng, split), wall_l, rng.uniform(0.0, 0.5)),
                floor=_rgb(_hue(rng, split), floor_l, rng.uniform(0.0, 0.4)),
                body=_rgb(_hue(rng, split), fig_l, rng.uniform(0.3, 1.0)),
                prop=_rgb(_hue(rng, split), prop_l, rng.uniform(0.5, 1.0)),
                wall_l=wall_l)


# ------------------------------------------------------------------------------------------- background


def _texture(rng, name: str, h: int, w: int) -> np.ndarray:
    """A low-contrast lightness pattern in [-0.1, 0.1], shape [h, w]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    amp = rng.uniform(0.04, 0.1)
    if name == "flat":
        return np.zeros((h, w), np.float32)
    if name == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        return amp * ((x * np.cos(a) + y * np.sin(a)) / max(h, w) * 2 - 1)
    if name == "stripes":
        period, a = rng.uniform(8, 20), rng.choice([0.0, np.pi / 2])
        return amp * np.sign(np.sin(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / period))
    if name == "blobs":  # a few rectangles: pictures, furniture
        t = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(2, 5)):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            t[y0:y0 + rng.integers(6, h // 3), x0:x0 + rng.integers(6, w // 3)] = rng.uniform(-1, 1) * amp
        return t
    if name == "checker":
        period = rng.uniform(6, 16)
        return amp * np.where((np.floor(x / period) + np.floor(y / period)) % 2 == 0, 1.0, -1.0)
    if name == "waves":
        t = np.zeros((h, w), np.float32)
        for _ in range(3):
            fx, fy, ph = rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0, 2 * np.pi)
            t += np.sin(fx * x + fy * y + ph)
        return amp * t / 3
    raise ValueError(f"unknown texture {name!r}")


def _background(rng, pal, split, h, w, floor_y) -> np.ndarray:
    """Wall (textured) above ``floor_y`` (pixel row), floor below, with a thin floor line. float32 [h, w, 3]."""
    tex = _texture(rng, str(rng.choice(TEXTURES[split])), h, w)[..., None]
    bg = np.where(np.arange(h)[:, None, None] < floor_y, pal["wall"], pal["floor"]) + tex
    row = int(round(floor_y))
    if 0 <= row < h:
        bg[row] = bg[row] * 0.75
    return np.clip(bg, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- drawing


class _Canvas:
    """Pixel-centre coordinates of a canvas, for vectorised distance-field drawing."""

    def __init__(self, h: int, w: int):
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float32)

    def coverage(self, prims, half_width: float) -> np.ndarray:
        """Anti-aliased coverage [h, w] in 0..1 of segments (capsules) and discs/rings, in pixel units."""
        d = np.full(self.x.shape, np.inf, np.float32)
        segs = np.array([p[2:6] for p in prims if p[0] == "seg"], np.float32).reshape(-1, 4)
        if len(segs):
            d = np.minimum(d, self._seg_dist(segs) - half_width)
        for p in prims:
            if p[0] in ("disc", "ring"):
                r = np.hypot(self.x - p[2], self.y - p[3]) - p[4]
                d = np.minimum(d, r if p[0] == "disc" else np.abs(r) - half_width)
        return np.clip(0.5 - d, 0.0, 1.0)

    def _seg_dist(self, segs: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (segs[:, i, None, None] for i in range(4))
        dx, dy = x1 - x0, y1 - y0
        px, py = self.x - x0, self.y - y0
        t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
        return np.hypot(px - t * dx, py - t * dy).min(axis=0)


def _to_pixels(prims, scale: float, ox: float, oy: float):
    """Figure units (y up) -> pixel coordinates (y down) with origin (ox, oy) in pixels."""
    out = []
    for p in prims:
        if p[0] == "seg":
            out.append(("seg", p[1], ox + scale * p[2], oy - scale * p[3], ox + scale * p[4], oy - scale * p[5]))
        else:
            out.append((p[0], p[1], ox + scale * p[2], oy - scale * p[3], scale * p[4]))
    return out


def _layout(rng, kind, body, style, size):
    """Figure scale and pixel origin so that every pose of the rep fits inside the frame."""
    pose = _POSES[kind]
    box = np.stack([_extent(pose(s, body, style)) for s in np.linspace(0, 1, 9)])
    x0, y0, x1, y1 = box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()
    fill = rng.uniform(0.7, 0.9) if kind == "curl" else rng.uniform(0.55, 0.85)  # side view: small motion, go big
    scale = min(fill * size / (y1 - y0), 0.9 * size / (x1 - x0))
    margin = 0.05 * size
    ox = rng.uniform(margin - scale * x0, size - margin - scale * x1) if size - 2 * margin > scale * (x1 - x0) \
        else size / 2 - scale * (x0 + x1) / 2
    top, bottom = margin + scale * y1, size - margin + scale * y0  # range of the ground row oy
    oy = rng.uniform(top, bottom) if bottom > top else size / 2 + scale * (y0 + y1) / 2
    return scale, ox, oy


# ------------------------------------------------------------------------------------------ distractors


def _shake(rng, n: int, amount: float) -> np.ndarray:
    """Per-frame integer camera offsets [n, 2] (dy, dx): a mean-reverting random walk within +-margin."""
    off = np.zeros((n, 2))
    for i in range(1, n):
        off[i] = 0.7 * off[i - 1] + amount * rng.standard_normal(2)
    return np.clip(np.round(off), -_SHAKE_MARGIN, _SHAKE_MARGIN).astype(int)


def _drifter(rng, pal, size, times):
    """A small object drifting in a straight line at constant speed (non-periodic), or None."""
    if rng.random() < 0.4:
        return None
    p0 = rng.uniform(0, size, 2)
    speed = rng.uniform(2, 10) * size / 96
    ang = rng.uniform(0, 2 * np.pi)
    path = p0 + np.outer(times, speed * np.array([np.cos(ang), np.sin(ang)]))
    colour = _rgb(rng.uniform(), pal["wall_l"] + rng.choice([-1, 1]) * rng.uniform(0.15, 0.35), rng.uniform(0.3, 1))
    return dict(path=path, r=rng.uniform(1.5, 4.0) * size / 96, colour=colour)


# ----------------------------------------------------------------------------------------------- render


def render_reps(rng: np.random.Generator, *, kind: str, n_reps: int, fps: float = 5.0, size: int = 96,
                start: float | None = None, period=(1.2, 3.0), jitter: float = 0.1, pause=(0.0, 1.0), tail=None,
                duration: float | None = None, split: str = "train", clean: bool = False) -> RepVideo:
    """Render ``n_reps`` repetitions of movement ``kind`` as a square video of ``size`` px at ``fps``.

    start:    second the first rep begins (None: random 0.5-3.0 s); the figure rests before it.
    period:   base seconds per rep, a number or range (lo, hi), lo >= MIN_PERIOD; each rep jitters by
              ``jitter`` (relative std) and gets an amplitude of 0.8-1.0 of the peak.
    pause:    seconds of rest between reps, a number or range.
    tail:     seconds of rest after the last rep (default range 0.8-2.0), unless ``duration`` fixes the length.
    split:    "train" or "test" (held-out hues and textures, see module doc).
    clean:    no distractor, flicker, shake or pixel noise (for tests and reference frames).
    """
    if kind not in _POSES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if isinstance(n_reps, bool) or not isinstance(n_reps, (int, np.integer)) or n_reps < 0:
        raise ValueError(f"n_reps must be an integer >= 0, got {n_reps!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")

    starts, periods, duration = _schedule(rng, int(n_reps), start, period, jitter, pause, tail, duration)
    n_frames = max(1, int(math.ceil(duration * fps - 1e-9)))
    times = np.arange(n_frames) / fps
    motion = _motion(times, starts, periods, rng.uniform(0.8, 1.0, len(starts)), rng.uniform(0.35, 0.6))

    body, style, pal = _body_params(rng), _kind_params(rng, kind), _palette(rng, split)
    scale, ox, oy = _layout(rng, kind, body, style, size)
    half_width = scale * rng.uniform(0.018, 0.03) if kind != "pendulum" else scale * rng.uniform(0.015, 0.025)
    floor_y = oy if kind != "pendulum" else rng.uniform(min(oy - 0.1 * scale, size - 1), size)  # below the weight
    m = _SHAKE_MARGIN
    bg = _background(rng, pal, split, size + 2 * m, size + 2 * m, floor_y + m)

    fx = _effects(rng, n_frames, pal, size, times, clean)
    canvas = _Canvas(size, size)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for i, s in enumerate(motion):
        dy, dx = fx["shake"][i]
        img = bg[m + dy: m + dy + size, m + dx: m + dx + size].copy()
        prims = _to_pixels(_POSES[kind](float(s), body, style), scale, ox - dx, oy - dy)
        if fx["drifter"] is not None:
            cx, cy = fx["drifter"]["path"][i]
            a = canvas.coverage([("disc", "d", cx - dx, cy - dy, fx["drifter"]["r"])], 0.0)[..., None]
            img = img * (1 - a) + fx["drifter"]["colour"] * a
        for layer in ("body", "prop"):
            layer_prims = [p for p in prims if p[1] == layer]
            if layer_prims:
                a = canvas.coverage(layer_prims, half_width)[..., None]
                img = img * (1 - a) + pal[layer] * a
        img = img * fx["gain"][i] * 255.0
        if fx["noise"] > 0:
            img = img + fx["noise"] * rng.standard_normal(img.shape).astype(np.float32)
        frames[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)

    return RepVideo(frames=frames, fps=float(fps), rep_times=[round(s + p, 2) for s, p in zip(starts, periods)],
                    duration=n_frames / fps, kind=kind, rep_starts=list(starts), motion=motion)


def _effects(rng, n_frames, pal, size, times, clean) -> dict:
    """Camera shake offsets, a drifting distractor, per-frame lighting gain and pixel-noise level."""
    if clean:
        return dict(shake=np.zeros((n_frames, 2), int), drifter=None, gain=np.ones(n_frames), noise=0.0)
    flicker = rng.uniform(0.0, 0.04) if rng.random() < 0.5 else 0.0
    return dict(shake=_shake(rng, n_frames, rng.uniform(0.0, 0.8)), drifter=_drifter(rng, pal, size, times),
                gain=1.0 + flicker * rng.standard_normal(n_frames), noise=float(rng.uniform(0.0, 8.0)))


# -------------------------------------------------------------------------------------------- contact sheet


def contact_sheet(path: str | Path, *, seed: int = 0, split: str = "train", n_cols: int = 10, size: int = 96) -> Path:
    """Write a PNG grid: one row per kind, ``n_cols`` consecutive frames from the first rep (with noise etc.)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(KINDS), n_cols, figsize=(1.3 * n_cols, 1.45 * len(KINDS)))
    for row, kind in enumerate(KINDS):
        v = render_reps(rng, kind=kind, n_reps=3, size=size, start=0.6, split=split)
        first = max(0, int(v.rep_starts[0] * v.fps) - 1)
        for col in range(n_cols):
            i = min(first + col, len(v.frames) - 1)
            ax = axes[row, col]
            ax.imshow(v.frames[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t={i / v.fps:.1f} s={v.motion[i]:.2f}", fontsize=6)
            if col == 0:
                ax.set_ylabel(kind, fontsize=8)
    fig.suptitle(f"render_reps split={split} seed={seed}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a contact sheet of synthetic rep videos.")
    ap.add_argument("out", nargs="?", default="out/repcount_sheet.png")
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(contact_sheet(args.out, seed=args.seed, split=args.split))
