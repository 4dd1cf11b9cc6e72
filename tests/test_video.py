"""Video I/O (microturn.codecs.video) and synthetic rep videos (microturn.data.video)."""
from __future__ import annotations

import numpy as np
import pytest

from microturn.codecs.video import VideoError, as_frames, frame_at, read_frames, write_mp4
from microturn.data.video import KINDS, MIN_PERIOD, RepVideo, _hue, render_reps


def _pattern(t=8, h=48, w=64, seed=0) -> np.ndarray:
    """Frames with flat coloured blocks (codec-friendly) that move from frame to frame."""
    rng = np.random.default_rng(seed)
    f = np.empty((t, h, w, 3), np.uint8)
    f[:] = rng.integers(40, 200, 3, dtype=np.uint8)
    for i in range(t):
        f[i, 8 + i: 24 + i, 10 + 2 * i: 30 + 2 * i] = (230, 30, 60)
    return f


# ------------------------------------------------------------------------------------------- codec


def test_mp4_round_trip(tmp_path):
    frames = _pattern()
    path = write_mp4(tmp_path / "a.mp4", frames, 5.0)
    back, fps = read_frames(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == pytest.approx(5.0)
    assert np.abs(back.astype(int) - frames).mean() < 3.0


def test_mp4_odd_size_and_fractional_fps(tmp_path):
    frames = _pattern(t=5, h=33, w=47)
    back, fps = read_frames(write_mp4(tmp_path / "odd.mp4", frames, 29.97))
    assert back.shape == frames.shape  # padded to even on write, cropped back on read
    assert fps == pytest.approx(29.97, abs=1e-3)
    assert np.abs(back.astype(int) - frames).mean() < 4.0


def test_npy_read(tmp_path):
    frames = _pattern(t=3)
    np.save(tmp_path / "v.npy", frames)
    back, fps = read_frames(tmp_path / "v.npy")
    assert fps is None
    np.testing.assert_array_equal(back, frames)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 3), np.uint8), "shape"),
    (np.zeros((2, 8, 8, 4), np.uint8), "shape"),
    (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
])
def test_bad_frames_raise(tmp_path, bad, msg):
    with pytest.raises(VideoError, match=msg):
        as_frames(bad)
    with pytest.raises(ValueError, match=msg):
        write_mp4(tmp_path / "x.mp4", bad, 5.0)
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="bad.npy"):
        read_frames(tmp_path / "bad.npy")


def test_unreadable_files_name_the_path(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="junk.mp4"):
        read_frames(junk)
    with pytest.raises(ValueError, match="missing.mp4"):
        read_frames(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="fps"):
        write_mp4(tmp_path / "y.mp4", _pattern(t=2), 0)


def test_frame_at_boundaries():
    frames = _pattern(t=4)  # 4 distinct frames at 5 fps: [0, 0.8) s
    shown = lambda t: frame_at(frames, 5.0, t)  # noqa: E731
    np.testing.assert_array_equal(shown(0.0), frames[0])
    np.testing.assert_array_equal(shown(0.1999), frames[0])
    np.testing.assert_array_equal(shown(0.2), frames[1])  # float error at an exact boundary still gives frame 1
    np.testing.assert_array_equal(shown(0.6), frames[3])
    np.testing.assert_array_equal(shown(0.79), frames[3])
    assert frame_at(frames, 5.0, 0.8) is None  # after the last frame the camera shows nothing
    assert frame_at(frames, 5.0, -0.01) is None
    with pytest.raises(ValueError):
        frame_at(frames, -1.0, 0.0)


# ------------------------------------------------------------------------------------------ render


def _cycles(active: np.ndarray) -> int:
    """Number of rest -> motion -> rest cycles in a boolean per-frame 'moving' signal."""
    a = np.concatenate([[False], active, [False]]).astype(int)
    return int((np.diff(a) == 1).sum())


@pytest.mark.parametrize("kind", KINDS)
def test_motion_repeats(kind):
    """Noise-free frames: back at the rest pose after each rep, far from it mid-rep, n_reps cycles.

    Pauses >= 0.2 s (one frame at 5 fps) so the first frame at or after each rep end lies in a pause.
    """
    for seed, n_reps in ((0, 3), (1, 5)):
        v = render_reps(np.random.default_rng(seed), kind=kind, n_reps=n_reps, start=1.0, pause=(0.2, 0.8),
                        clean=True)
        assert isinstance(v, RepVideo) and v.n_reps == n_reps
        assert v.frames.dtype == np.uint8 and v.frames.shape == (len(v.frames), 96, 96, 3)
        rest = v.frames[0].astype(np.float32)
        diff = np.abs(v.frames.astype(np.float32) - rest).mean(axis=(1, 2, 3))
        peak = diff.max()
        assert peak > 0.5, f"{kind}: the figure does not move"
        for k, (st, end) in enumerate(zip(v.rep_starts, v.rep_times)):
            assert end - st >= MIN_PERIOD - 1e-9
            assert diff[int(np.ceil(end * v.fps - 1e-6))] < 0.05 * peak, f"{kind}: not at rest after rep {k}"
            mid = range(int(np.ceil(st * v.fps)), int(end * v.fps) + 1)
            assert max(diff[i] for i in mid) > 0.5 * peak, f"{kind}: rep {k} does not move"
        assert _cycles(diff > 0.3 * peak) == n_reps
        assert diff[-1] == 0.0 and v.rep_times[-1] < v.duration  # rests after the last rep
        assert np.all(v.motion[: int(v.rep_starts[0] * v.fps)] == 0)


def test_back_to_back_reps_return_near_rest():
    """With no pause the pose still comes close to rest at every rep end (ground-truth motion signal)."""
    for kind in KINDS:
        v = render_reps(np.random.default_rng(5), kind=kind, n_reps=6, pause=0.0, clean=True, size=48)
        ends = [v.motion[round(t * v.fps)] for t in v.rep_times]
        assert max(ends) < 0.2
        assert _cycles(v.motion > 0.5) == 6


def test_timing_and_duration():
    v = render_reps(np.random.default_rng(3), kind="squat", n_reps=4, start=2.0, period=2.0, jitter=0.0,
                    pause=0.5, duration=15.0, clean=True)
    assert v.rep_starts == [2.0, 4.5, 7.0, 9.5]
    assert v.rep_times == [4.0, 6.5, 9.0, 11.5]
    assert v.duration == 15.0 and len(v.frames) == 75
    with pytest.raises(ValueError, match="too short"):
        render_reps(np.random.default_rng(3), kind="squat", n_reps=4, start=2.0, period=2.0, duration=5.0)


def test_zero_reps_is_still():
    v = render_reps(np.random.default_rng(0), kind="arms", n_reps=0, clean=True)
    assert v.rep_times == [] and len(v.frames) >= 1
    assert np.all(v.frames == v.frames[0])


def test_deterministic_and_varied():
    a = render_reps(np.random.default_rng(7), kind="jump", n_reps=2, split="test")
    b = render_reps(np.random.default_rng(7), kind="jump", n_reps=2, split="test")
    c = render_reps(np.random.default_rng(8), kind="jump", n_reps=2, split="test")
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.rep_times == b.rep_times
    assert a.rep_times != c.rep_times or not np.array_equal(a.frames[0], c.frames[0])


def test_noisy_render_differs_from_clean():
    kw = dict(kind="curl", n_reps=2, start=1.0, size=64)
    clean = render_reps(np.random.default_rng(4), clean=True, **kw)
    noisy = render_reps(np.random.default_rng(4), **kw)
    assert noisy.frames.shape == clean.frames.shape == (len(clean.frames), 64, 64, 3)
    assert not np.array_equal(noisy.frames, clean.frames)


def test_split_hues_disjoint():
    rng = np.random.default_rng(0)
    train = {int(_hue(rng, "train") * 12) for _ in range(200)}
    test = {int(_hue(rng, "test") * 12) for _ in range(200)}
    assert train == {0, 2, 4, 6, 8, 10} and test == {1, 3, 5, 7, 9, 11}


@pytest.mark.parametrize("kw, msg", [
    (dict(kind="dance"), "unknown kind"),
    (dict(split="val"), "unknown split"),
    (dict(n_reps=-1), "n_reps"),
    (dict(period=(0.5, 1.0)), "period"),
    (dict(fps=0), "fps"),
])
def test_render_bad_args(kw, msg):
    args = dict(kind="squat", n_reps=2) | kw
    with pytest.raises(ValueError, match=msg):
        render_reps(np.random.default_rng(0), **args)


def test_rendered_video_survives_mp4(tmp_path):
    v = render_reps(np.random.default_rng(2), kind="pendulum", n_reps=2, start=0.6)
    back, fps = read_frames(write_mp4(tmp_path / "rep.mp4", v.frames, v.fps))
    assert back.shape == v.frames.shape and fps == pytest.approx(v.fps)
    assert np.abs(back.astype(int) - v.frames).mean() < 6.0
