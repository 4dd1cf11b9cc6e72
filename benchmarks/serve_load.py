"""A bounded load test of the server on loopback: N clients stream real speech (espeak-ng) at real-time pace for M
minutes over the native protocol, against a server subprocess (so its memory and CPU are its own).

Reports the server's step time and overruns (from its `stats` messages), audio it had to drop, the latency from
sending a micro-turn window's last audio byte to receiving that window's output (client side, per window), and the
server's resident memory. Stops by itself.

    .venv/bin/python benchmarks/serve_load.py                      # 8 clients, 1 minute, the default model
    .venv/bin/python benchmarks/serve_load.py --clients 16 --minutes 2 --checkpoint path/to/model --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import websockets

from microturn.codecs.audio import load_wav
from microturn.serve import protocol as P

SENTENCES = ("When I say tiger, say bingo.", "What is seven plus five?", "Tell me about the river near the mountain.",
             "Okay, that sounds good to me.", "Could you count my jumping jacks, please?",
             "The quick brown fox jumps over the lazy dog.", "Hmm, let me think about that for a second.")
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
CHUNK_S = 0.1  # client chunks of 100 ms
RATE = 16000


# ---------------------------------------------------------------- audio
def espeak(text: str, voice: str, folder: Path) -> np.ndarray:
    path = folder / f"{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), text], check=True, capture_output=True)
    return load_wav(path)


def conversation(clips: list[np.ndarray], seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Utterances separated by 0.5-2.5 s pauses, ``seconds`` long (the user's side of a conversation)."""
    parts, n = [], 0
    while n < seconds * RATE:
        for x in (clips[int(rng.integers(len(clips)))], np.zeros(int(rng.uniform(0.5, 2.5) * RATE), np.float32)):
            parts.append(x)
            n += len(x)
    return np.concatenate(parts)[: int(seconds * RATE)]


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, a) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "microturn.serve.app", "--port", str(port), "--max-sessions", str(a.clients),
           "--idle-timeout", "30"] + (["--checkpoint", a.checkpoint] if a.checkpoint else []) \
        + (["--threads", str(a.threads)] if a.threads else [])
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would block the server
    proc = subprocess.Popen(cmd, stderr=log, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read()}")
        try:
            info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read())
            return proc, info
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- one client
class ClientResult:
    def __init__(self):
        self.latency: list[float] = []  # s, per window
        self.stats: list[dict] = []
        self.errors: dict[str, int] = {}
        self.windows = 0
        self.overloaded = False  # the server dropped some of this client's audio: later windows no longer match


async def client(url: str, audio: np.ndarray, delay: float, res: ClientResult) -> None:
    """Stream ``audio`` at real-time pace in 100 ms chunks; time each window's output against its last byte."""
    await asyncio.sleep(delay)
    window = int(0.2 * RATE)  # replaced by the server's delta below
    sent_at: dict[int, float] = {}
    async with websockets.connect(url, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        window = int(round(hello["delta"] * RATE))
        await ws.send(json.dumps({"type": "session.start", "sample_rate": RATE}))
        json.loads(await ws.recv())
        receiver = asyncio.create_task(receive(ws, sent_at, res))
        step, t0 = int(CHUNK_S * RATE), time.perf_counter()
        for k, i in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(0.0, t0 + k * CHUNK_S - time.perf_counter()))
            await ws.send(pcm16(audio[i : i + step]))
            end = i + step
            if end % window == 0:
                sent_at[end // window - 1] = time.perf_counter()
        await ws.send(json.dumps({"type": "session.end"}))
        await asyncio.wait_for(receiver, 30)


async def receive(ws, sent_at: dict[int, float], res: ClientResult) -> None:
    try:
        async for m in ws:
            now = time.perf_counter()
            if isinstance(m, bytes):
                t = P.parse_audio_frame(m)[0]
                res.windows += 1
                sent = sent_at.pop(t, None)
                if sent is not None and not res.overloaded:
                    res.latency.append(now - sent)
                continue
            d = json.loads(m)
            if d["type"] == "stats":
                res.stats.append(d)
            elif d["type"] == "error":
                res.errors[d["code"]] = res.errors.get(d["code"], 0) + 1
                res.overloaded |= d["code"] == "too_fast"
    except websockets.ConnectionClosed:
        pass


# ---------------------------------------------------------------- the run
async def load(a, port: int, pid: int, tracks: list[np.ndarray]) -> tuple[list[ClientResult], list[float]]:
    url = f"ws://127.0.0.1:{port}/v1/stream"
    results = [ClientResult() for _ in tracks]
    memory: list[float] = [rss_mb(pid)]

    async def monitor():
        while True:
            await asyncio.sleep(1.0)
            memory.append(rss_mb(pid))

    mon = asyncio.create_task(monitor())
    await asyncio.gather(*(client(url, x, i * 0.2 / len(tracks), r) for i, (x, r) in enumerate(zip(tracks, results))))
    mon.cancel()
    memory.append(rss_mb(pid))
    return results, memory


def report(a, info: dict, results: list[ClientResult], memory: list[float]) -> dict:
    lat = np.array([x for r in results for x in r.latency]) * 1000
    step = np.array([s["step_ms"] for r in results for s in r.stats if s.get("step_ms") is not None])
    last = [r.stats[-1] for r in results if r.stats]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    pct = lambda x, q: round(float(np.percentile(x, q)), 1) if len(x) else None  # noqa: E731
    return {
        "clients": a.clients, "minutes": a.minutes, "model": info.get("model"), "cpu_cores": os.cpu_count(),
        "windows_received": sum(r.windows for r in results),
        "steps": sum(s["steps"] for s in last), "overruns": sum(s["overruns"] for s in last),
        "dropped_s": round(sum(s["dropped_s"] for s in last), 2),
        "step_ms": {"mean": round(float(step.mean()), 1) if len(step) else None, "p99": pct(step, 99)},
        "latency_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
                       "max": round(float(lat.max()), 1) if len(lat) else None, "n": int(len(lat))},
        "overloaded_clients": sum(r.overloaded for r in results),
        "late_fraction": round(float((lat > 1000 * info.get("delta", 0.2)).mean()), 4) if len(lat) else None,
        "server_rss_mb": {"start": round(memory[0], 1), "peak": round(max(memory), 1), "end": round(memory[-1], 1)},
        "errors": errors,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--checkpoint", default=None, help="model to serve (default: bundled, else an untrained one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the report here")
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [espeak(s, VOICES[i % len(VOICES)], Path(tmp)) for i, s in enumerate(SENTENCES)]
    tracks = [conversation(clips, a.minutes * 60, rng) for _ in range(a.clients)]
    port = free_port()
    proc, info = start_server(port, a)
    try:
        print(f"server up (model {info['model']}); {a.clients} clients x {a.minutes:g} min of speech ...",
              file=sys.stderr)
        results, memory = asyncio.run(load(a, port, proc.pid, tracks))
    finally:
        stop_server(proc)
    out = report(a, info, results, memory)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
