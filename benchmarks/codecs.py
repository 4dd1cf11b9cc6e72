"""Codec speed on this machine: dMel encoding and Griffin-Lim decoding as real-time factors.

RTF here = seconds of audio / seconds of compute (higher is faster; 1.0 is just real time). Median over repeats, for
1 s and 10 s of speech (espeak-ng when installed, else speech-like noise bursts) and for one 200 ms micro-turn pushed
through the streaming encoder / decoded on its own (16 frames, what the runtime does every step).

    .venv/bin/python benchmarks/codecs.py [--threads 1] [--repeats 15] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from microturn.codecs import audio, dmel
from microturn.codecs.vocoder import GriffinLim

TEXT = ("Please say the word manzana in exactly twelve seconds. Seventy two apples, bingo! "
        "How are you doing today? I am fine, thank you, and you? ")


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of 16 kHz speech: espeak-ng repeated, or speech-like noise when it is not installed."""
    n = int(seconds * audio.SAMPLE_RATE)
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["espeak-ng", "-w", f"{d}/s.wav", TEXT], check=True, capture_output=True)
            x = audio.load_wav(f"{d}/s.wav")
        return np.resize(x, n).astype(np.float32), "espeak-ng speech"
    rng = np.random.default_rng(0)
    env = (np.sin(np.arange(n) / audio.SAMPLE_RATE * 2 * np.pi * 0.7) > -0.3).astype(np.float32)
    return rng.standard_normal(n).astype(np.float32) * 0.05 * env, "noise bursts"


def timeit(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(repeats: int = 15, threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    voc = GriffinLim()
    x10, source = speech(10.0)
    load = os.getloadavg()[0]
    rows = []

    def add(what, seconds, times):
        med = float(np.median(times))
        rows.append({"what": what, "audio_s": seconds, "median_ms": round(med * 1000, 3),
                     "p90_ms": round(float(np.percentile(times, 90)) * 1000, 3), "rtf": round(seconds / med, 1)})

    for seconds in (1.0, 10.0):
        x = x10[: int(seconds * audio.SAMPLE_RATE)]
        add(f"dMel encode {seconds:g} s", seconds, timeit(lambda: dmel.encode(x), repeats))
        mel = dmel.dequantize(dmel.encode(x))
        reps = repeats if seconds < 5 else max(3, repeats // 3)
        add(f"vocoder decode {seconds:g} s", seconds, timeit(lambda: voc(mel), reps))
    # Streaming: one micro-turn (200 ms = 3200 samples) into a warm DMelStream; 16 frames through the vocoder.
    chunk = x10[: 3200 * 50].reshape(50, 3200)
    stream = dmel.DMelStream()
    it = iter(range(10**9))
    add("dMel stream 200 ms chunk", 0.2, timeit(lambda: stream.push(chunk[next(it) % 50]), repeats * 10))
    mel16 = dmel.dequantize(dmel.encode(x10[:3200]))
    assert mel16.shape == (16, 80)
    add("vocoder 200 ms (16 frames)", 0.2, timeit(lambda: voc(mel16), repeats * 5))
    return {"source": source, "threads": torch.get_num_threads(), "vocoder_iters": voc.iters,
            "vocoder_nnls_steps": voc.nnls_steps, "repeats": repeats, "cpus": os.cpu_count(),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2), "rows": rows}


def print_table(res: dict):
    print(f"codecs on {res['source']}, torch threads {res['threads']}, Griffin-Lim {res['vocoder_iters']} iterations "
          f"(+{res['vocoder_nnls_steps']} NNLS steps); {res['cpus']} CPUs, load average {res['load_before']} before, "
          f"{res['load_after']} after; RTF = audio seconds / compute seconds")
    print(f"{'':30s} {'median ms':>10s} {'p90 ms':>9s} {'RTF':>9s}")
    for r in res["rows"]:
        print(f"{r['what']:30s} {r['median_ms']:10.2f} {r['p90_ms']:9.2f} {r['rtf']:8.1f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="torch thread counts to measure")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args(argv)
    results = []
    for th in a.threads:
        res = run(a.repeats, th)
        print_table(res)
        print()
        results.append(res)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
