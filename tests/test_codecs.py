"""Codecs: dMel against a direct numpy computation of the recipe, the vocoder round trip, streaming, resampling,
bad input, image patches; hypothesis properties for quantisation and PCM16."""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from microturn.codecs import audio, dmel, patches, vocoder
from microturn.codecs.audio import AudioError

# One thread: the machine's 2 cores are shared, and two torch threads waiting on a busy core run 10-20x slower.
torch.set_num_threads(1)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = ("The quick brown fox jumps over the lazy dog, and then it sleeps.",
             "Seventy two apples, please. Bingo!")


@lru_cache(maxsize=None)
def _speech(text: str, voice: str, folder: str) -> np.ndarray:
    path = f"{folder}/{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", path, text], check=True, capture_output=True)
    return audio.load_wav(path)  # espeak-ng writes 22,050 Hz: load_wav resamples to 16 kHz


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("espeak"))
    return lambda text=SENTENCES[0], voice="en": _speech(text, voice, folder)


# ------------------------------------------------------------------------------------- a numpy reference of dMel
def np_mel_filterbank() -> np.ndarray:
    """HTK mel triangles over the 513 rfft bins, 80 filters, 80-7600 Hz, unnormalised (recomputed, not imported)."""
    hz2mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel2hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    freqs = np.arange(513) * 16000.0 / 1024
    edges = mel2hz(np.linspace(hz2mel(80.0), hz2mel(7600.0), 82))
    fb = np.zeros((80, 513))
    for m in range(80):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return fb


def np_dmel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The recipe, frame by frame: causal 800-sample frames ending at (i + 1) * 200 (zeros before time 0), periodic
    Hann window, zero-padded to 1024 with the window centred, |rfft|, mel, log10 floor 1e-10, clamp [-7, 2], nearest
    of 16 levels. Returns (bins [n, 80], clamped log-mel [n, 80])."""
    x = np.concatenate([np.zeros(600), np.asarray(x, np.float64)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic
    fb = np_mel_filterbank()
    n = (len(x) - 600) // 200
    logmel = np.empty((n, 80))
    for i in range(n):
        frame = np.zeros(1024)
        frame[112:912] = x[i * 200 : i * 200 + 800] * hann  # samples (i+1)*200-800 .. (i+1)*200 of the signal
        logmel[i] = np.log10(np.maximum(fb @ np.abs(np.fft.rfft(frame)), 1e-10))
    logmel = np.clip(logmel, -7.0, 2.0)
    levels = np.linspace(-7.0, 2.0, 16)
    return np.abs(logmel[..., None] - levels).argmin(-1), logmel


def test_mel_filterbank_matches_numpy():
    np.testing.assert_allclose(dmel.mel_filterbank(), np_mel_filterbank(), atol=1e-6)


def test_constants():
    assert (dmel.N_FFT, dmel.WIN, dmel.HOP, dmel.N_MELS, dmel.N_BINS) == (1024, 800, 200, 80, 16)
    assert dmel.FRAMES_PER_SECOND == 80 and dmel.STEP == pytest.approx(0.6)
    np.testing.assert_allclose(dmel.LEVELS, np.linspace(-7, 2, 16), atol=1e-6)


@needs_espeak
@pytest.mark.parametrize("text,voice", [(SENTENCES[0], "en"), (SENTENCES[1], "en-us+f3")])
def test_dmel_matches_numpy_reference(speech, text, voice):
    x = speech(text, voice)
    ref_bins, ref_logmel = np_dmel(x)
    bins = dmel.encode(x)
    assert bins.dtype == np.uint8 and bins.shape == ref_bins.shape == (len(x) // 200, 80)
    np.testing.assert_allclose(dmel.log_mel(x).numpy(), ref_logmel, atol=2e-3)  # float32 STFT vs float64 FFT
    diff = np.abs(bins.astype(int) - ref_bins)
    assert diff.max() <= 1
    # Bins may only differ where the value sits on a rounding edge (float32 vs float64 or a tie).
    edge = np.abs((ref_logmel + 7.0) / dmel.STEP % 1.0 - 0.5) < 1e-3
    assert np.all(edge[diff > 0]), "a bin differs away from a rounding edge"
    assert diff.mean() < 1e-3
    # Real speech uses much of the range.
    assert bins.max() >= 12 and bins.max() - bins.min() >= 8


def test_dmel_frame_count_and_causality():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16_000 + 137).astype(np.float32) * 0.1
    bins = dmel.encode(x)
    assert bins.shape == (80, 80)  # N samples -> N // 200 frames
    # Causal: frame i only sees samples before (i + 1) * 200, so changing the future does not change it.
    y = x.copy()
    y[8000:] = rng.standard_normal(len(y) - 8000) * 0.5
    np.testing.assert_array_equal(dmel.encode(y)[:40], bins[:40])
    assert not np.array_equal(dmel.encode(y)[40:], bins[40:])
    assert dmel.encode(np.zeros(199, np.float32)).shape == (0, 80)
    assert np.all(dmel.encode(np.zeros(1600, np.float32)) == 0)  # silence is the floor bin


@needs_espeak
@pytest.mark.parametrize("text,voice,overall", [(SENTENCES[0], "en", 0.3), (SENTENCES[1], "en-us+f3", 0.3),
                                                ("Hello, how are you doing today? I am fine.", "en+m3", 0.4)])
def test_vocoder_round_trip_keeps_log_mel(speech, text, voice, overall):
    """decode(encode(x)): Griffin-Lim on the dequantised dMel, re-analysed, stays within the quantisation error
    (STEP / 2 = 0.3 in log10 units) of the original log-mel.

    Where speech stops dead into digital silence (log-mel -7), Griffin-Lim's overlap-add leaks a little energy into
    the next 2-3 frames; tiny in amplitude, but up to 3-5 in log10 units. On voices whose words end abruptly (en+m3)
    that alone lifts the mean over all frames to ~0.35, so the bound over all frames is 0.4 there, while on the
    voiced frames (mean log-mel above ``layout.VOICED``) every voice must stay within STEP / 2."""
    x = speech(text, voice)
    bins = dmel.encode(x)
    voc = vocoder.get_vocoder("griffinlim")
    y = voc(dmel.dequantize(bins))
    assert y.dtype == np.float32 and len(y) == len(bins) * dmel.HOP and np.all(np.abs(y) <= 1)
    original = np_dmel(x)[1]
    err = np.abs(dmel.log_mel(y).numpy() - original)
    voiced = original.mean(1) > -5.0
    assert voiced.mean() > 0.5
    assert err.mean() <= overall, f"re-analysed log-mel is {err.mean():.3f} from the original"
    assert err[voiced].mean() <= dmel.STEP / 2, f"voiced frames: {err[voiced].mean():.3f} from the original"
    # ...and the re-encoded speech is mostly the same bins (within one level).
    assert np.mean(np.abs(dmel.encode(y).astype(int) - bins)[voiced] <= 1) > 0.85
    assert len(voc(np.zeros((0, 80)))) == 0


def test_vocoder_rejects_bad_shapes():
    voc = vocoder.GriffinLim(iters=2)
    for bad in (np.zeros((10, 40)), np.zeros(80), np.zeros((2, 2, 10, 80))):
        with pytest.raises(ValueError, match="log-mel"):
            voc(bad)
    batch = np.random.default_rng(0).uniform(-6, 0, (3, 8, 80)).astype(np.float32)
    # a batch is the windows one by one, up to float rounding (a batched FFT or matmul may sum in another order)
    np.testing.assert_allclose(voc(batch), np.stack([voc(m) for m in batch]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="unknown vocoder 'hifigan'"):
        vocoder.get_vocoder("hifigan")


@needs_espeak
def test_streaming_equals_offline(speech):
    x = speech()
    rng = np.random.default_rng(1)
    stream = dmel.DMelStream()
    for _ in range(2):  # and again after reset
        chunks, i = [], 0
        while i < len(x):
            n = int(rng.choice([0, 1, 7, 199, 200, 201, 640, 3200, int(rng.integers(1, 5000))]))
            chunks.append(stream.push(x[i : i + n]))
            i += n
        got = np.concatenate(chunks)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, dmel.encode(x))
        stream.reset()


def test_streaming_micro_turns_give_16_frames():
    stream = dmel.DMelStream()
    x = np.random.default_rng(2).standard_normal(3200 * 5).astype(np.float32) * 0.05
    outs = [stream.push(x[i : i + 3200]) for i in range(0, len(x), 3200)]
    assert [o.shape for o in outs] == [(16, 80)] * 5
    np.testing.assert_array_equal(np.concatenate(outs), dmel.encode(x))


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resampling_other_rates(rate, tmp_path):
    t = np.arange(int(rate * 0.5)) / rate
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)  # 0.5 s of 1 kHz
    y = audio.resample(x, rate)
    assert y.dtype == np.float32 and abs(len(y) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(len(y) - 2000)))
    peak = np.argmax(spectrum) * audio.SAMPLE_RATE / (len(y) - 2000)
    assert abs(peak - 1000.0) < 5.0
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    np.testing.assert_array_equal(dmel.encode(x, rate=rate), dmel.encode(y))
    audio.save_wav(tmp_path / "a.wav", x, rate)  # and from a file at that rate
    z = audio.load_wav(tmp_path / "a.wav")
    assert abs(len(z) - 8000) <= 1 and np.max(np.abs(z[:7990] - y[:7990])) < 1e-3


def test_load_wav_channels(tmp_path):
    st_ = np.stack([np.full(1600, 0.25, np.float32), np.full(1600, -0.5, np.float32)], 1)
    audio.save_wav(tmp_path / "s.wav", st_)
    assert audio.load_wav(tmp_path / "s.wav", channel=1)[100] == pytest.approx(-0.5, abs=1e-4)
    assert audio.load_wav(tmp_path / "s.wav", channel=None).shape == (1600, 2)
    with pytest.raises(AudioError, match="2 channel"):
        audio.load_wav(tmp_path / "s.wav", channel=2)
    audio.save_wav(tmp_path / "e.wav", np.zeros((0, 2), np.float32), 8000)  # a well-formed file of no samples
    assert audio.load_wav(tmp_path / "e.wav").shape == (0,)
    assert audio.load_wav(tmp_path / "e.wav", channel=None).shape == (0, 2)


def test_bad_audio_raises_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="empty"):
        dmel.encode(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match=r"mono.*\(1600, 2\)"):
        dmel.encode(np.zeros((1600, 2), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        dmel.encode(np.array([0.0, np.nan] * 800, np.float32))
    with pytest.raises(AudioError, match="NaN or infinite"):
        dmel.DMelStream().push(np.array([np.inf] * 10, np.float32))
    with pytest.raises(AudioError, match="numeric"):
        audio.as_mono(np.array(["a", "b"]))
    for rate in (0, 7, -16000, 44_100.5, True, 10**7):
        with pytest.raises(AudioError, match="unsupported sample rate"):
            dmel.encode(np.zeros(1600, np.float32), rate=rate)
    with pytest.raises(AudioError, match="missing.wav"):
        audio.load_wav(tmp_path / "missing.wav")
    audio.save_wav(tmp_path / "full.wav", np.full(16000, 0.1, np.float32))
    (tmp_path / "cut.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:500])  # a copy that stopped
    with pytest.raises(AudioError, match="cut.wav is cut short"):
        audio.load_wav(tmp_path / "cut.wav")
    assert len(audio.load_wav(tmp_path / "full.wav")) == 16000
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(AudioError, match="junk.wav"):
        audio.load_wav(tmp_path / "junk.wav")
    with pytest.raises(AudioError, match="NaN"):
        audio.save_wav(tmp_path / "nan.wav", np.array([np.nan], np.float32))
    with pytest.raises(AudioError, match="even number of bytes"):
        audio.pcm16_to_float(b"\x00\x01\x02")


def test_bad_bins_raise():
    with pytest.raises(ValueError, match=r"frames, 80\].*\(16, 40\)"):
        dmel.dequantize(np.zeros((16, 40), np.uint8))
    with pytest.raises(ValueError, match=r"frames, 80\].*\(80,\)"):
        dmel.dequantize(np.zeros(80, np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 15\].*16"):
        dmel.dequantize(np.full((3, 80), 16, np.uint8))


def test_int16_audio_is_scaled():
    x = audio.as_mono(np.array([0, 16384, -32768], np.int16))
    assert x.dtype == np.float32 and x[1] == pytest.approx(0.5, abs=1e-4) and x[2] <= -1.0


# ------------------------------------------------------------------------------------------------------- patches
@pytest.mark.parametrize("shape", [(80, 80, 3), (37, 53, 3), (480, 640, 3), (720, 1280, 4), (64, 48), (9, 9, 1)])
def test_any_frame_gives_fixed_patches(shape):
    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    p = patches.patchify(frame)
    assert p.shape == (patches.n_patches(), patches.PATCH * patches.PATCH * 3) == (4, 4800)
    assert p.dtype == torch.float32 and float(p.min()) >= -1 and float(p.max()) <= 1


def test_patch_round_trip_and_order():
    rng = np.random.default_rng(3)
    for _ in range(3):
        f = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
        np.testing.assert_array_equal(patches.unpatchify(patches.patchify(f)), f)
    f = np.zeros((80, 80, 3), np.uint8)
    f[:40, 40:] = 255  # the top-right quadrant is patch 1 (row by row)
    p = patches.patchify(f)
    assert [float(p[i].mean()) for i in range(4)] == [-1.0, 1.0, -1.0, -1.0]
    g = rng.random((80, 80, 3))  # float frames in [0, 1]
    assert np.abs(patches.unpatchify(patches.patchify(g)).astype(int) - (g * 255).round()).max() <= 0
    big = patches.patchify(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8), size=160, patch=40)
    assert big.shape == (16, 4800)


def test_bad_frames_raise():
    for bad, msg in [(np.zeros((4, 4, 2), np.uint8), "RGB"), (np.zeros((0, 5, 3), np.uint8), "empty"),
                     (np.zeros(10, np.uint8), "RGB"), (np.full((8, 8, 3), np.nan), "finite")]:
        with pytest.raises(ValueError, match=msg):
            patches.patchify(bad)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patches.patchify(np.zeros((8, 8, 3), np.uint8), size=50, patch=40)


# ---------------------------------------------------------------------------------------------------- properties
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 6), st.just(80)), elements=finite))
def test_quantize_dequantize_within_half_step(values):
    v = torch.from_numpy(values)
    bins = dmel.quantize(v)
    assert bins.dtype == torch.uint8 and (bins.numel() == 0 or int(bins.max()) <= 15)
    back = dmel.dequantize(bins)
    err = (back - v.clamp(dmel.LOG_MIN, dmel.LOG_MAX)).abs()
    assert err.numel() == 0 or float(err.max()) <= dmel.STEP / 2 + 1e-5
    np.testing.assert_array_equal(dmel.quantize(back).numpy(), bins.numpy())  # levels are fixed points


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, st.integers(0, 300), elements=st.floats(-1.5, 1.5, width=32)))
def test_pcm16_round_trip(x):
    b = audio.float_to_pcm16(x)
    assert len(b) == 2 * len(x)
    y = audio.pcm16_to_float(b)
    # Write scale 32767, read scale 1/32768 (libsndfile's convention): at most 1.5 LSB after clipping to [-1, 1].
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1.5 / 32768 + 1e-7)
    again = np.frombuffer(audio.float_to_pcm16(y), "<i2").astype(int)
    assert np.abs(again - np.frombuffer(b, "<i2")).max(initial=0) <= 1


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 900), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_streaming_any_chunks_property(sizes, seed):
    x = np.random.default_rng(seed).standard_normal(sum(sizes) + 1).astype(np.float32) * 0.1
    s, i, outs = dmel.DMelStream(), 0, []
    for n in sizes + [1]:
        outs.append(s.push(x[i : i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(outs), dmel.encode(x))
