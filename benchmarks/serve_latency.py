"""Turn-taking latency through the server: from the end of the user's speech to the first agent audio at the client.

One client asks questions from the task language (spoken by espeak-ng) over the native protocol at real-time pace,
then keeps streaming silence (the model's clock runs on audio) until the agent answers or ``--wait`` seconds pass.
Per turn it measures
- wall latency: receiving the first voiced agent audio frame minus sending the last sample of the user's speech;
- stream latency: the start of that frame's window on the session clock minus the end of the user's speech (the
  model's own decision time, free of network and buffering).
and prints the medians. Only meaningful with a trained checkpoint (``--checkpoint``): an untrained model speaks noise
at random, so its figure is printed but labelled untrained. Stops by itself.

    .venv/bin/python benchmarks/serve_latency.py --checkpoint path/to/model --turns 8
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import CHUNK_S, RATE, espeak, free_port, pcm16, start_server, stop_server  # noqa: E402

from microturn.data.language import question_and_answer  # noqa: E402
from microturn.serve import protocol as P  # noqa: E402

SPEECH_LEVEL = 0.01  # |sample| above which espeak's output is speech (its trailing silence is trimmed)


def end_of_speech(x: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(x) > SPEECH_LEVEL)
    return int(loud[-1]) + 1 if len(loud) else len(x)


class Listener:
    """Receives the server's messages; remembers voiced agent windows with their arrival time."""

    def __init__(self):
        self.voiced: list[tuple[float, float]] = []  # (window start on the session clock, arrival time)
        self.silent_after: float = 0.0  # session time of the latest silent window
        self.words: list[str] = []

    async def run(self, ws) -> None:
        try:
            async for m in ws:
                now = time.perf_counter()
                if isinstance(m, bytes):
                    _, start_ms, voiced, _ = P.parse_audio_frame(m)
                    if voiced:
                        self.voiced.append((start_ms / 1000, now))
                    else:
                        self.silent_after = start_ms / 1000
                elif (d := json.loads(m))["type"] == "word":
                    self.words.append(d["w"])
        except websockets.ConnectionClosed:
            pass

    def first_after(self, t: float) -> tuple[float, float] | None:
        return next(((s, a) for s, a in self.voiced if s >= t - 1e-6), None)


async def stream(ws, x: np.ndarray, clock: dict) -> float:
    """Send ``x`` at real-time pace in 100 ms chunks, each when its start is due on the session's clock
    (``clock["t0"]``: the wall time of its first sample), so calls in a row keep the pace; returns the wall time
    the last chunk was sent. (Until session 7 each call kept its own pace: the waits for an answer, one chunk per
    call, sent silence as fast as the socket took it, which ran the client's clock far ahead of the server's.)"""
    step, last = int(CHUNK_S * RATE), time.perf_counter()
    for i in range(0, len(x), step):
        await asyncio.sleep(max(0.0, clock["t0"] + clock["samples"] / RATE - time.perf_counter()))
        await ws.send(pcm16(x[i : i + step]))
        last = time.perf_counter()
        clock["samples"] += len(x[i : i + step])
    return last


async def turns(url: str, questions: list[tuple[str, np.ndarray]], wait: float) -> list[dict]:
    out = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.start", "sample_rate": RATE}))
        await ws.recv()
        listener = Listener()
        task = asyncio.create_task(listener.run(ws))
        clock = {"samples": 0, "t0": time.perf_counter()}
        await stream(ws, np.zeros(RATE, np.float32), clock)  # a second of silence first
        for text, x in questions:
            end = end_of_speech(x)
            await stream(ws, x[:end], clock)
            sent_end, t_end = time.perf_counter(), clock["samples"] / RATE
            await stream(ws, x[end:], clock)
            deadline = time.perf_counter() + wait
            while listener.first_after(t_end) is None and time.perf_counter() < deadline:
                await stream(ws, np.zeros(int(CHUNK_S * RATE), np.float32), clock)
            hit = listener.first_after(t_end)
            out.append({"question": text, "end_s": round(t_end, 3),
                        "wall_ms": None if hit is None else round((hit[1] - sent_end) * 1000, 1),
                        "stream_ms": None if hit is None else round((hit[0] - t_end) * 1000, 1)})
            quiet = time.perf_counter() + wait  # let the agent finish before the next question
            while listener.silent_after <= clock["samples"] / RATE - 0.6 and time.perf_counter() < quiet:
                await stream(ws, np.zeros(int(CHUNK_S * RATE), np.float32), clock)
            await stream(ws, np.zeros(int(0.6 * RATE), np.float32), clock)
        await ws.send(json.dumps({"type": "session.end"}))
        await asyncio.wait_for(task, 30)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="trained model (default: bundled, else an untrained one)")
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--wait", type=float, default=4.0, help="seconds to wait for an answer")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.clients = 1
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        questions = []
        for _ in range(a.turns):
            q, _ = question_and_answer(rng)
            questions.append((q, espeak(q, "en-us", Path(tmp))))
    port = free_port()
    proc, info = start_server(port, a)
    try:
        rows = asyncio.run(turns(f"ws://127.0.0.1:{port}/v1/stream", questions, a.wait))
    finally:
        stop_server(proc)
    wall = [r["wall_ms"] for r in rows if r["wall_ms"] is not None]
    strm = [r["stream_ms"] for r in rows if r["stream_ms"] is not None]
    trained = (info.get("model") or {}).get("trained")
    out = {"model": info.get("model"), "turns": rows, "answered": len(wall),
           "median_wall_ms": float(np.median(wall)) if wall else None,
           "median_stream_ms": float(np.median(strm)) if strm else None}
    for r in rows:
        print(f"{r['question']:<40} wall {r['wall_ms']} ms, stream {r['stream_ms']} ms")
    print(f"median over {len(wall)}/{len(rows)} answered turns: {out['median_wall_ms']} ms at the client "
          f"({out['median_stream_ms']} ms on the session clock)")
    if not trained:
        print("NOTE: the served model is UNTRAINED (random weights): it makes noise at random, so this latency "
              "means nothing about turn-taking. Pass --checkpoint with a trained model.")
    return out


if __name__ == "__main__":
    main()
