"""Runtime: audio-clock sessions, batching, background failures, the Python API."""
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from microturn.codecs import dmel
from microturn.codecs.audio import load_wav
from microturn.model.config import ModelConfig
from microturn.model.model import InteractionModel, Sampling
from microturn.runtime.background import Background, BackendError, LocalTools, words_to_number
from microturn.runtime.session import Engine
from microturn.stream.layout import VOICED
from microturn.stream.tokenizer import default_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32)).eval()


def _audio(seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def _run(model, chunks, text_at=None, capacity=2, extra_sessions=0, leave_at=None, sampling=Sampling(), audio=False):
    eng = Engine(model, capacity=capacity, generate_audio=audio, sampling=sampling)
    s = eng.open()
    others = [eng.open() for _ in range(extra_sessions)]
    tokens, sent = [], 0
    for c in chunks:
        if text_at is not None and sent == int(text_at * 16000):
            s.push_text("When I say tiger, say bingo.")
        s.push_audio(c)
        for o in others:
            o.push_audio(np.ones(len(c), np.float32) * 0.05)
        sent += len(c)
        eng.run_ready()
        if leave_at is not None and sent >= leave_at * 16000 and others:
            others.pop().close()
            eng.open().push_audio(_audio(0.3, 9))  # someone else joins
        tokens += [(o.tokens, o.audio) if audio else o.tokens for o in s.drain()]
    return tokens


def test_odd_chunks_and_jitter_equal_one_piece(model):
    x = _audio()
    whole = _run(model, np.split(x, [8000]), text_at=0.5)  # the text arrives at 0.5 s of audio
    rng = np.random.default_rng(1)
    cuts = np.unique(np.concatenate([rng.choice(len(x), 40, replace=False), [8000]]))
    odd = _run(model, np.split(x, cuts), text_at=0.5)
    assert len(whole) == len(odd) == 10 and whole == odd


def test_sessions_joining_and_leaving_do_not_change_a_session(model):
    x = _audio()
    chunks = np.split(x, 20)  # 0.1 s each: the text goes in at 0.5 s
    alone = _run(model, chunks, text_at=0.5)
    crowded = _run(model, chunks, text_at=0.5, capacity=4, extra_sessions=2, leave_at=1.0)
    assert alone == crowded


def test_sessions_heard_through_warps(model):
    """Sampling.warps: a session heard twice as it came speaks exactly as heard once (tokens and audio); heard
    through two vocal tracts it is still one conversation, untouched by sessions joining and leaving."""
    x = _audio()
    chunks = np.split(x, 20)
    once = _run(model, chunks, text_at=0.5, audio=True)
    twice = _run(model, chunks, text_at=0.5, audio=True, sampling=Sampling(warps=(1.0, 1.0)))
    assert len(once) == len(twice) == 10
    for (tok, wav), (tok2, wav2) in zip(once, twice):
        assert tok == tok2 and np.array_equal(wav, wav2)
    warped = Sampling(warps=(0.9, 1.1))
    alone = _run(model, chunks, text_at=0.5, sampling=warped)
    assert alone == _run(model, chunks, text_at=0.5, capacity=4, extra_sessions=2, leave_at=1.0, sampling=warped)


def test_engine_refuses_beyond_capacity(model):
    eng = Engine(model, capacity=1, generate_audio=False)
    eng.open()
    with pytest.raises(RuntimeError, match="slots"):
        eng.open()


class Failing:
    def __call__(self, q):
        raise BackendError("boom")


class Slow:
    def __call__(self, q):
        time.sleep(3.0)
        return "late"


def test_background_failures_and_timeouts_never_stop_a_session(model):
    eng = Engine(model, capacity=3, generate_audio=False)
    sessions = [eng.open(Background(Failing(), delay=0.2)), eng.open(Background(Slow(), delay=None, timeout=0.2)),
                eng.open(Background(LocalTools(), delay=0.4))]
    for s in sessions:
        s.background.ask("seven times eight", 0.0)
    for t in range(10):
        for s in sessions:
            s.push_audio(np.zeros(3200, np.float32))
        eng.tick()
    failed, slow, ok = (s.answers for s in sessions)
    assert failed and failed[0].error and "boom" in failed[0].error
    assert slow and "time-out" in slow[0].error
    assert ok and ok[0].text == "fifty six" and ok[0].t >= 0.4
    assert all(s.t == 10 for s in sessions)


def test_local_tools_calculator():
    calc = LocalTools()
    assert calc("forty seven times twenty three") == "one zero eight one"
    assert calc("What is 12 plus 30?") == "forty two"
    assert words_to_number(["seventy", "two"]) == 72
    with pytest.raises(BackendError):
        calc("the meaning of life")


def test_engine_refuses_a_model_of_another_vocabulary():
    """A checkpoint trained for another tokenizer would decode every word wrong: refused with the way out."""
    other = InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size - 29, flow_width=32))
    with pytest.raises(ValueError, match="grow_vocab"):
        Engine(other, capacity=1, generate_audio=False)


def test_engine_refuses_a_half_precision_model():
    """Inference runs in float32 (its cache, clock and noise are): a bfloat16 model is refused with the way out."""
    half = InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32))
    with pytest.raises(ValueError, match=r"float32 model, got torch.bfloat16 .*model.float\(\)"):
        Engine(half.to(torch.bfloat16), capacity=1, generate_audio=False)
    Engine(half.float(), capacity=1, generate_audio=False)


def test_push_text_rejects_empty(model):
    s = Engine(model, capacity=1, generate_audio=False).open()
    with pytest.raises(ValueError):
        s.push_text("  ")


def test_threads_can_push_while_engine_ticks(model):
    eng = Engine(model, capacity=2, generate_audio=False)
    s = eng.open()
    x = _audio(1.0)

    def feed():
        for c in np.split(x, 25):
            s.push_audio(c)
            time.sleep(0.001)

    th = threading.Thread(target=feed)
    th.start()
    while th.is_alive() or s.ready():
        eng.tick()
    th.join()
    assert s.t == 5


def test_a_tick_waits_until_the_one_in_flight_has_advanced_its_sessions(model):
    """Two threads ticking one engine: the second steps micro-turn 1 only once the first has finished micro-turn 0
    (its vocoding included), so it sees the session's clock moved on and micro-turn 1's camera frame."""
    eng = Engine(model, capacity=1)
    seen, slow = [], threading.Event()
    step, vocode = model.step, eng.vocode

    def watched_step(state, audio, video, video_on, *args, **kwargs):
        seen.append((int(state.t[0]), bool(video_on[0])))
        return step(state, audio, video, video_on, *args, **kwargs)

    def slow_vocode(mel, sessions):
        if not slow.is_set():
            slow.set()
            time.sleep(0.5)
        return vocode(mel, sessions)

    eng.vocode = slow_vocode
    s = eng.open()
    L = model.layout
    s.push_audio(np.zeros(L.samples, np.float32))
    s.push_frame(np.full((80, 80, 3), 200, np.uint8))  # shown in micro-turn 1's window
    s.push_audio(np.zeros(L.samples, np.float32))
    try:
        model.step = watched_step
        first = threading.Thread(target=eng.tick)
        first.start()
        assert slow.wait(30)  # the first tick is vocoding
        eng.tick()
        first.join()
    finally:
        del model.step
    assert seen == [(0, False), (1, True)] and not s.camera
    assert [o.t for o in s.drain()] == [0, 1]


def test_the_camera_holds_its_frame_until_the_next_or_off(model):
    """A window without a frame of its own sees the last one (as offline encoding's video holds its frame); the last
    frame of a window is the one it sees; None turns the camera off from its window."""
    eng = Engine(model, capacity=1, generate_audio=False)
    seen, step = [], model.step

    def watched_step(state, audio, video, video_on, *args, **kwargs):
        seen.append((bool(video_on[0]), int(video[0, 0, 0, 0])))
        return step(state, audio, video, video_on, *args, **kwargs)

    s = eng.open()
    window = np.zeros(model.layout.samples, np.float32)
    pushes = {0: [100], 2: [150, 200], 4: [None]}  # micro-turn -> frames pushed in its window (grey levels)
    try:
        model.step = watched_step
        for t in range(6):
            for level in pushes.get(t, []):
                s.push_frame(None if level is None else np.full((80, 80, 3), level, np.uint8))
            s.push_audio(window)
            eng.run_ready()
    finally:
        del model.step
    assert seen == [(True, 100), (True, 100), (True, 200), (True, 200), (False, 0), (False, 0)]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_window_by_window_vocoding_keeps_the_speech(model, tmp_path):
    """The engine vocodes each 200 ms window on its own (after a few frames of the previous one): real speech's
    mel, window by window, re-analyses to within the dMel quantisation error (STEP / 2) on voiced frames, and
    silent windows cost nothing."""
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Seventy two apples, please. Say bingo in twelve seconds."],
                   check=True, capture_output=True)
    x = load_wav(wav, 16000)
    eng = Engine(model, capacity=1)
    s = eng.open()
    F = eng.layout.frames
    mel = dmel.dequantize(dmel.encode(x)).numpy()
    n = len(mel) // F * F
    y = np.concatenate([eng.vocode(mel[None, w : w + F], [s])[s.slot] for w in range(0, n, F)])
    original = dmel.log_mel(x[: n * dmel.HOP]).numpy()
    voiced = original.mean(1) > VOICED
    assert voiced.mean() > 0.4
    assert np.abs(dmel.log_mel(y).numpy() - original)[voiced].mean() <= dmel.STEP / 2
    assert not eng.vocode(np.full((1, F, 80), -7.0, np.float32), [s])[s.slot].any()


def test_perf_measures_the_steady_state(model):
    """``microturn perf`` times ticks once the sessions' caches are full (what an hour-long session costs):
    ``steady_after`` micro-turns fill a session's cache, two fewer do not."""
    from microturn.runtime.perf import steady_after, tick_times

    n = steady_after(model)
    eng = Engine(model, capacity=1)
    s = eng.open()
    audio = _audio(n * model.layout.delta)
    for t in range(n):
        full = bool((eng.state.cache.pos[s.slot] >= 0).all())
        assert not full or t == n - 1, f"full after {t} of {n} micro-turns"
        s.push_audio(audio[t * model.layout.samples : (t + 1) * model.layout.samples])
        eng.tick()
    assert (eng.state.cache.pos[s.slot] >= 0).all()
    assert len(tick_times(model, 2, 3, warmup=1)) == 3
    assert len(tick_times(model, 2, 3, warmup=1, sampling=Sampling(warps=(0.9, 1.1)))) == 3  # perf --warps


def test_hour_session_figures(model):
    """The long-session run reports its drifts (the step time's against a fresh session stepped alternately with it)
    and its clock runs on past the session's length (the paired minute at the end)."""
    from microturn.runtime.perf import hour

    h = hour(model, seconds=30.0, minute=6.0)
    L = model.layout
    assert len(h["step_ms"]) == int(30.0 / L.delta) and all(ms > 0 for ms in h["step_ms"])
    assert all(np.isfinite(h[k]) for k in ("step_drift_pct", "raw_step_drift_pct", "memory_drift_pct"))
    assert h["clock_s"] == pytest.approx(30.0 + 6.0)
    assert [t for t, _ in h["memory"]][:2] == [0.0, 10 * L.delta]


def test_perf_refuses_a_long_session_too_short_to_measure(capsys):
    """`microturn perf --hour-seconds` below MIN_HOUR_SECONDS would report drifts of empty windows (NaN in the JSON):
    it is refused with the reason, before any model is loaded; the shortest allowed measures finite drifts."""
    from microturn.cli import main
    from microturn.runtime.perf import MIN_HOUR_SECONDS, hour, run

    with pytest.raises(ValueError, match=f"at least {MIN_HOUR_SECONDS:g}"):
        run(hour_seconds=12)
    assert main(["perf", "--hour-seconds", "12"]) == 2 and "hour_seconds" in capsys.readouterr().err
    torch.manual_seed(0)
    tiny = InteractionModel(ModelConfig(depth=1, vocab_size=default_tokenizer().vocab_size, flow_width=32)).eval()
    h = hour(tiny, seconds=MIN_HOUR_SECONDS, minute=MIN_HOUR_SECONDS / 4)
    assert all(np.isfinite(h[k]) for k in ("step_drift_pct", "raw_step_drift_pct", "memory_drift_pct"))


def test_readme_python_api_runs(tmp_path, monkeypatch):
    """The README's Python API example runs as written, on the bundled model (a question from espeak-ng)."""
    import re
    from pathlib import Path

    from microturn.model import checkpoint

    if not checkpoint.DEFAULT_CHECKPOINT.exists() or shutil.which("espeak-ng") is None:
        pytest.skip("needs the bundled model and espeak-ng")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    subprocess.run(["espeak-ng", "-w", "question.wav", "What is two plus three?"], check=True, capture_output=True)
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(a))
    exec(compile(code, "README.md", "exec"), {})
    assert len(printed) > 10 and isinstance(printed[-1][0], list)  # a line per micro-turn, then the words


def test_a_delegations_answer_arrives_its_delay_after_the_query_is_complete(model, monkeypatch):
    """A delegation is dated at its <dlg> (the start of that micro-turn's output window), but its query is sent
    when it is complete: at the end of the micro-turn that wrote </dlg>, as a real background model would get it. A
    simulated delay runs from there, and the answer enters the first micro-turn the runtime steps after it is due
    (its ``t``). Training dates the arrival from the <dlg> instead, 2-3 micro-turns earlier (docs/training.md,
    session 52: the bundled model did no better with the runtime timed as training is)."""
    from microturn.stream.tokenizer import BG, DLG, DLG_END, EOT, PAD

    tok = default_tokenizer()
    q = tok.encode(" six times seven")
    assert len(q) == 3
    script = {3: [DLG, q[0], EOT], 4: [q[1], q[2], EOT], 5: [DLG_END, EOT, PAD]}  # <dlg> in micro-turn 3
    step, seen = model.step, {}

    def scripted(state, audio, video, video_on, text_in, *args, **kw):
        t = len(seen)
        seen[t] = text_in[0].tolist()
        forced = torch.tensor([script.get(t, [EOT, PAD, PAD])])
        return step(state, audio, video, video_on, text_in, *args, forced_out=forced, **kw)

    monkeypatch.setattr(model, "step", scripted)
    eng = Engine(model, capacity=1, generate_audio=False)
    s = eng.open(Background(LocalTools(), delay=0.9))
    s.push_audio(np.zeros(16000 * 3, np.float32))
    while eng.tick():
        pass
    (event,) = s.events
    assert event.t == pytest.approx(0.8)  # (3 + 1) x 0.2 s: the output window of the <dlg>
    (answer,) = s.answers
    assert answer.text == "forty two" and answer.asked == pytest.approx(1.2)  # the end of micro-turn 5, </dlg>
    assert answer.t == pytest.approx(2.2)  # due at 2.1: the first micro-turn stepped after it starts at 2.2
    assert min(t for t, row in seen.items() if BG in row) == 11  # and it is read there
