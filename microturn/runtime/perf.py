"""``microturn perf``: real-time figures of the runtime on this machine.

- one session: full step (encode, model, flow head, vocoder) median and p99;
- the largest number of concurrent sessions stepped in real time (p99 of a batched tick under the budget delta);
- memory per session; a PNG of latency against sessions;
- a one-hour simulated session: step time and memory over time (drift of the last minute against the first;
  step time against a fresh session stepped alternately with it, so the machine's speed changes cancel).
"""
from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codecs.audio import SAMPLE_RATE
from ..model.model import InteractionModel, Sampling
from ..model.transformer import KVCache
from .session import Engine


MIN_HOUR_SECONDS = 40.0  # the shortest long session whose drifts can be measured (quarters of 10 s)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _speech_like(rng, n) -> np.ndarray:
    """Noise bursts with pauses: input that exercises the encoder like speech does."""
    x = rng.standard_normal(n).astype(np.float32) * 0.05
    env = (np.sin(np.arange(n) / SAMPLE_RATE * 2 * np.pi * 0.4) > 0).astype(np.float32)
    return x * env


def steady_after(model: InteractionModel) -> int:
    """Micro-turns after which a session's KV cache is full (pinned prefix + window + slack; a micro-turn's last
    out tokens go in with the next one): from then on a step costs what it costs an hour later. Shorter sessions
    step faster (attention looks at the slots in use only)."""
    L = model.layout
    return -(-(KVCache.size(model.cfg) + L.n_out) // L.length)


def tick_times(model: InteractionModel, n_sessions: int, steps: int, seed: int = 0,
               warmup: int | None = None, sampling: Sampling | None = None) -> list[float]:
    """Milliseconds per batched tick with ``n_sessions`` sessions all stepping each tick, measured after
    ``warmup`` ticks (default: until the sessions' caches are full, the steady state). ``sampling``: the decoding
    (default: the checkpoint's own)."""
    warmup = steady_after(model) if warmup is None else warmup
    eng = Engine(model, capacity=n_sessions, sampling=sampling)
    sessions = [eng.open() for _ in range(n_sessions)]
    rng = np.random.default_rng(seed)
    L = model.layout
    audio = _speech_like(rng, L.samples * (steps + warmup))
    out = []
    for t in tqdm(range(steps + warmup), desc=f"{n_sessions} sessions", unit="tick", leave=False):
        for s in sessions:
            s.push_audio(audio[t * L.samples : (t + 1) * L.samples])
        t0 = time.perf_counter()
        eng.tick()
        if t >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
        for s in sessions:
            s.drain()
    return out


def hour(model: InteractionModel, seconds: float = 3600.0, seed: int = 0, minute: float = 60.0,
         sampling: Sampling | None = None) -> dict:
    """A simulated session of ``seconds``: per-step time and memory over time (compared over windows of ``minute``).

    Step-time drift compares the session's last minute with a fresh session's second minute (caches full, as in
    the long session's first minute) stepped alternately with it, tick for tick: the machine's own speed, which
    changes over an hour on a shared machine, then weighs on both sides alike. The drift of the first minute
    against the last, timed an hour apart, is reported beside it (``raw_step_drift_pct``)."""
    rng = np.random.default_rng(seed)
    L = model.layout
    steps, per_min = int(seconds / L.delta), int(minute / L.delta)
    gc.collect()  # engines of earlier measurements, held in reference cycles, freed now rather than mid-hour
    chunk = _speech_like(rng, L.samples * 50)

    def stepper():
        eng = Engine(model, capacity=1, sampling=sampling)
        s = eng.open()
        t = 0

        def step() -> float:
            nonlocal t
            s.push_audio(chunk[(t % 50) * L.samples : (t % 50 + 1) * L.samples])
            t0 = time.perf_counter()
            eng.tick()
            ms = (time.perf_counter() - t0) * 1000
            s.drain()
            s.words.clear()
            t += 1
            return ms
        return step, s

    long, session = stepper()
    ms = np.zeros(steps)  # allocated up front, so the measurement's own records do not grow the memory measured
    mem = np.zeros((len(range(0, steps, 10)), 2))
    for t in tqdm(range(steps), desc="one-hour session", unit="step", mininterval=2):
        ms[t] = long()
        if t % 10 == 0:
            mem[t // 10] = t * L.delta, rss_mb()
    fresh, _ = stepper()
    for _ in range(per_min):  # the fresh session's first minute: its cache fills
        fresh()
    pairs = [(long(), fresh()) for _ in range(per_min)]
    end, start = np.median([a for a, _ in pairs]), np.median([b for _, b in pairs])
    first, last = np.median(ms[per_min : 2 * per_min]), np.median(ms[-per_min:])  # minute 1 after warm-up
    m_first = np.median([m for t, m in mem if minute <= t < 2 * minute])
    m_last = np.median([m for t, m in mem if t >= seconds - minute])
    return {"step_ms": ms.tolist(), "memory": [tuple(m) for m in mem.tolist()],
            "step_drift_pct": 100 * (end - start) / start,
            "raw_step_drift_pct": 100 * (last - first) / first,
            "memory_drift_pct": 100 * (m_last - m_first) / m_first, "clock_s": session.t * L.delta}


def run(checkpoint: str | None = None, preset: str = "cpu", json_path: str | None = None, out: str = "out/perf",
        hour_seconds: float = 3600.0, max_sessions: int = 128, threads: int | None = None,
        warps: tuple[float, ...] | None = None) -> dict:
    """The figures, printed, drawn under ``out`` and written to ``json_path``. ``warps``: decode with these test-time
    vocal-tract warps (``Sampling.warps``) instead of the checkpoint's own. The long session's drifts compare its
    minutes (a quarter of it, when ``hour_seconds`` is under four minutes)."""
    if not hour_seconds >= MIN_HOUR_SECONDS:
        raise ValueError(f"hour_seconds must be at least {MIN_HOUR_SECONDS:g} (the long session's drifts compare "
                         f"quarters of it at the least, and its memory is sampled every 2 s), got {hour_seconds:g}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if json_path:  # its folder made before the measurements: a bad path fails now, not after them
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        if Path(json_path).is_dir():
            raise ValueError(f"cannot write the figures to {json_path}: it is a folder")
    minute = min(60.0, hour_seconds / 4)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..model import checkpoint as ckpt

    if threads:
        torch.set_num_threads(threads)
    if checkpoint or ckpt.DEFAULT_CHECKPOINT.exists():
        model = ckpt.load(checkpoint) if checkpoint else ckpt.load_default()
        name = checkpoint or "bundled"
    else:
        from ..model.config import preset as get_preset
        from ..stream.tokenizer import default_tokenizer

        model = InteractionModel(get_preset(preset, vocab_size=default_tokenizer().vocab_size))
        name = f"{preset} (random weights)"
    model.eval()
    sampling = Sampling.of(model, **({} if warps is None else {"warps": warps}))
    if sampling.warps:
        name += ", warps " + ",".join(f"{w:g}" for w in sampling.warps)
    budget = model.layout.delta * 1000
    Path(out).mkdir(parents=True, exist_ok=True)
    one = tick_times(model, 1, 300, sampling=sampling)
    p50, p99 = float(np.median(one)), float(np.percentile(one, 99))
    print(f"one session ({name}): step median {p50:.2f} ms, p99 {p99:.2f} ms (budget {budget:.0f} ms)")
    curve, best = [], 1
    n = 1
    while n <= max_sessions:
        ts = tick_times(model, n, 40, sampling=sampling)
        q = float(np.percentile(ts, 99))
        curve.append((n, float(np.median(ts)), q))
        print(f"{n:4d} sessions: tick median {np.median(ts):7.1f} ms, p99 {q:7.1f} ms")
        if q < budget:
            best = n
        else:
            break
        n = n * 2 if n < 16 else n + 16
    gc.collect()  # the tick measurements' engines: freed before the memory is counted
    base = rss_mb()
    eng = Engine(model, capacity=1, sampling=sampling)
    one_mem = rss_mb() - base
    eng33 = Engine(model, capacity=33, sampling=sampling)
    per_session = (rss_mb() - base - one_mem) / 32
    del eng, eng33
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", label="median")
    ax.plot([c[0] for c in curve], [c[2] for c in curve], "s-", label="p99")
    ax.axhline(budget, color="r", ls="--", label=f"budget Δ = {budget:.0f} ms")
    ax.set_xlabel("concurrent sessions (one batched tick)")
    ax.set_ylabel("ms per tick")
    ax.set_title(f"microturn runtime, {name}, {torch.get_num_threads()} threads")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(Path(out) / "sessions.png", dpi=100)
    plt.close(fig)
    h = hour(model, hour_seconds, minute=minute, sampling=sampling)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    ms = np.array(h["step_ms"])
    k = max(1, len(ms) // 300)
    ax[0].plot(np.arange(len(ms))[::k] * model.layout.delta / 60, ms[::k], lw=0.5)
    ax[0].set_xlabel("session minute")
    ax[0].set_ylabel("step ms")
    ax[1].plot([t / 60 for t, _ in h["memory"]], [m for _, m in h["memory"]])
    ax[1].set_xlabel("session minute")
    ax[1].set_ylabel("process memory (MB)")
    fig.tight_layout()
    fig.savefig(Path(out) / "hour.png", dpi=100)
    plt.close(fig)
    result = {"preset": name, "step_ms_p50": round(p50, 3), "step_ms_p99": round(p99, 3),
              "max_realtime_sessions": best, "session_memory_mb": round(per_session, 2),
              "hour_step_drift_pct": round(h["step_drift_pct"], 2),
              "hour_raw_step_drift_pct": round(h["raw_step_drift_pct"], 2),
              "hour_memory_drift_pct": round(h["memory_drift_pct"], 2)}
    print(f"largest real-time batch: {best} sessions; memory per session {per_session:.1f} MB")
    span = "minute" if minute == 60 else f"{minute:g} s"
    print(f"{hour_seconds / 60:g}-minute session: step time drift {h['step_drift_pct']:+.1f} % (its last {span} "
          f"against a fresh session's second {span}, stepped alternately; {h['raw_step_drift_pct']:+.1f} % against "
          f"its own first {span}, timed that much earlier), memory drift {h['memory_drift_pct']:+.1f} %, clock at "
          f"the end {h['clock_s']:.1f} s")
    print(f"pictures: {out}/sessions.png, {out}/hour.png")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result
