"""The remote agent: a model behind a WebSocket server (``microturn serve``), spoken to over its wire protocol.

    agent = RemoteAgent("ws://127.0.0.1:8000/v1/stream", token=None, pace="fast", concurrency=4)
    outs = agent.run_many(scenarios)             # AgentOutput(words, audio, events, stats) per scenario

The client speaks the protocols of ``docs/protocol.md`` with the ``websockets`` package; it never imports the
server's code (the bench sits below ``serve`` in the layering), so the few wire constants it needs are repeated here.

**Native protocol** (``/v1/stream``, the default). One session per scenario: ``hello``, ``session.start`` (16 kHz),
then for each micro-turn t (Δ from ``session.started``, 200 ms for microturn) the typed text events whose time falls
in [tΔ, (t+1)Δ), the camera frame shown at tΔ (JPEG-encoded with PyAV, while the video lasts; then ``"jpeg": null``,
the camera off), then the window's audio as one PCM16 binary frame of Δ. The user's audio is padded with silence to
whole micro-turns, so the server steps exactly ceil(duration / Δ) micro-turns, as ``ModelAgent`` does; before
``session.end`` the client waits until every micro-turn's output has arrived. The outputs: ``word`` messages (times
on the session's audio clock, which is the scenario's), agent audio frames placed on the input's clock at their
``start_ms`` ((t+1)Δ), ``event`` messages (delegations and background answers), ``stats`` (the server's compute per
step and overruns).

**Pacing** (``pace``):

- ``"fast"``: as fast as the server steps. The server drops audio that runs more than ``max_ahead_s`` (2 s, from
  ``hello``) ahead of its stepping, which would shift the session clock, so the client never lets the audio it has
  sent run more than ``max_ahead`` seconds (default 1.5 s, and at most ``max_ahead_s`` - 0.5 s) ahead of the last
  micro-turn whose output it has *received*: before sending window t it waits until outputs up to micro-turn
  t - ceil(max_ahead / Δ) have come back. The server's own backlog is never larger than the client's view of it
  (the client counts audio sent and outputs received), so nothing is dropped whatever the network does.
- ``"realtime"``: window t is sent at wall time (t + 1)Δ after the start, as a microphone would deliver it; the same
  guard holds it back if the server falls more than ``max_ahead`` behind (``stats["held_s"]`` says for how long), and
  ``stats["late_ms"]`` is how long after sending a window's last byte its output arrived.

Either way a ``too_fast`` error from the server (audio dropped, the clock shifted) is counted in
``stats["errors"]`` and warned about.

**OpenAI-Realtime endpoint** (``realtime=True``, ``/v1/realtime``): audio as base64 PCM16 24 kHz
``input_audio_buffer.append``, typed text as ``conversation.item.create``; always at real-time pace, because that
protocol carries no timing: an output delta is placed at the window whose audio had just been sent when it arrived
(exact while the server's latency is under Δ), and a word starts at the window of the transcript delta that began it
and ends at the end of the window of its last delta. Camera frames and delegation events do not exist there
(frames are skipped, ``stats["frames_skipped"]``).

Background delegations are answered by the server itself (its local tools, or whatever background it was given):
the scenario's ``background.delay`` cannot be imposed on a remote server, so delegate-family timing reflects the
server's background, not the scenario's.

``run_many`` runs up to ``concurrency`` sessions at once (asyncio); a server that answers ``busy`` is retried.
``token``: the server's bearer token (``Authorization: Bearer``), else ``$MICROTURN_TOKEN``, else none.
"""
from __future__ import annotations

import asyncio
import base64
import fractions
import json
import math
import os
import re
import struct
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..codecs.audio import SAMPLE_RATE, float_to_pcm16, resample
from ..stream.scenario import Scenario
from ..stream.words import Word
from .agents import Agent, AgentOutput, _spread, n_samples

NATIVE_URL = "ws://127.0.0.1:8000/v1/stream"
REALTIME_URL = "ws://127.0.0.1:8000/v1/realtime"
PROTOCOL_VERSION = 1
AUDIO_MAGIC = b"MTAU"
AUDIO_HEADER = struct.Struct("<4sIII")  # magic, micro-turn t, window start (ms), flags
MAX_TEXT = 2000  # characters of one text message
# the codes after which the server closes the session (docs/protocol.md); Realtime errors carry no `fatal` flag
FATAL = frozenset({"too_many_errors", "slow_consumer", "idle_timeout", "busy", "unauthorized", "forbidden_origin",
                   "forbidden_host", "internal_error"})
MAX_SIDE = 2048  # pixels a side of a camera frame
REALTIME_RATE = 24000
REALTIME_DELTA = 0.2  # the Realtime protocol does not announce Δ: microturn's
AHEAD_MARGIN = 0.5  # seconds kept below the server's max_ahead_s


class RemoteError(RuntimeError):
    """The server refused or ended a session (``code``: the protocol's error code, or ``closed``/``timeout``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class _Run:
    """One scenario's session as the client sees it."""

    scenario: Scenario
    delta: float
    rate_out: int
    turns: int
    agent_audio: np.ndarray  # at rate_out
    stepped: int = 0  # micro-turns whose output has been received
    words: list[Word] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    last_stats: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    ended: dict | None = None
    fatal: RemoteError | None = None
    closed: bool = False
    sent_at: dict = field(default_factory=dict)  # micro-turn -> wall time its last byte was sent
    late_ms: list[float] = field(default_factory=list)
    held_s: float = 0.0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.progress.set()


class RemoteAgent(Agent):
    """An agent behind ``microturn serve`` (see the module docstring for the protocol use and the pacing rule)."""

    def __init__(self, url: str | None = None, token: str | None = None, realtime: bool = False,
                 pace: str | None = None, concurrency: int = 4, max_ahead: float = 1.5, timeout: float = 60.0,
                 retries: int = 5):
        pace = pace or ("realtime" if realtime else "fast")
        if pace not in ("fast", "realtime"):
            raise ValueError(f"pace must be 'fast' or 'realtime', got {pace!r}")
        if realtime and pace != "realtime":
            raise ValueError("the OpenAI-Realtime protocol carries no timing: only pace='realtime' works with it")
        if concurrency < 1 or max_ahead <= 0 or timeout <= 0:
            raise ValueError("concurrency, max_ahead and timeout must be positive")
        self.url = url or (REALTIME_URL if realtime else NATIVE_URL)
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"the server's URL must be a ws:// or wss:// URL, got {self.url!r}")
        self.token = token if token is not None else os.environ.get("MICROTURN_TOKEN") or None
        self.realtime, self.pace, self.concurrency = realtime, pace, concurrency
        self.max_ahead, self.timeout, self.retries = max_ahead, timeout, retries
        self.name = "remote-realtime" if realtime else "remote"
        self.checkpoint = None  # the served model's name, from the native hello

    def run(self, scenario: Scenario) -> AgentOutput:
        return self.run_many([scenario])[0]

    def run_many(self, scenarios: list[Scenario]) -> list[AgentOutput]:
        return _run_sync(self._run_all(scenarios))

    async def _run_all(self, scenarios: list[Scenario]) -> list[AgentOutput]:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        gate = asyncio.Semaphore(self.concurrency)

        async def one(s: Scenario) -> AgentOutput:
            async with gate:
                for attempt in range(self.retries + 1):
                    try:
                        try:
                            return await (self._realtime(s) if self.realtime else self._native(s))
                        except (OSError, InvalidHandshake, InvalidURI) as e:  # refused, unreachable, no WebSocket
                            raise RemoteError("unreachable", f"cannot talk to {self.url}: {e}") from None
                        except ConnectionClosed as e:  # the server closed the socket without an error message
                            raise RemoteError("closed", f"the server closed the connection: {e}") from None
                    except RemoteError as e:
                        if e.code != "busy" or attempt == self.retries:
                            raise RemoteError(e.code, f"scenario {s.id!r}: {e.message}") from None
                        await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt))

        return list(await asyncio.gather(*(one(s) for s in scenarios)))

    def _connect(self):
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return connect(self.url, additional_headers=headers, compression=None, open_timeout=self.timeout,
                       max_size=8 << 20)

    # ---------------------------------------------------------------- the native protocol
    async def _native(self, scenario: Scenario) -> AgentOutput:
        import websockets

        async with self._connect() as ws:
            hello = await _expect(ws, "hello", self.timeout)
            start = {"type": "session.start", "sample_rate": SAMPLE_RATE, "version": PROTOCOL_VERSION}
            await ws.send(json.dumps(start | ({"token": self.token} if self.token else {})))
            started = await _expect(ws, "session.started", self.timeout)
            self.checkpoint = (hello.get("model") or {}).get("name", self.checkpoint)
            delta = float(started.get("delta") or hello["delta"])
            rate_out = int((started.get("audio_out") or {}).get("rate", SAMPLE_RATE))
            turns = int(math.ceil(scenario.duration / delta - 1e-9))
            audio, video = await asyncio.to_thread(_inputs, scenario, turns * int(round(delta * SAMPLE_RATE)))
            r = _Run(scenario, delta, rate_out, turns, np.zeros(n_samples(scenario.duration, rate_out), np.float32))
            ahead = max(delta, min(self.max_ahead, float(hello.get("max_ahead_s", 2.0)) - AHEAD_MARGIN))
            receiver = asyncio.create_task(self._receive_native(ws, r))
            try:
                await self._send_native(ws, r, audio, video, ahead)
                await self._wait_stepped(r, r.turns)
                await ws.send(json.dumps({"type": "session.end"}))
                await asyncio.wait_for(asyncio.shield(receiver), self.timeout)
            except websockets.ConnectionClosed:  # the receiver knows why: let it read what came before the close
                await asyncio.wait({receiver}, timeout=1.0)
            except asyncio.TimeoutError:
                raise RemoteError("timeout", f"no session.ended within {self.timeout:g} s of session.end") from None
            finally:
                if not receiver.done():
                    receiver.cancel()
            if r.fatal is not None:
                raise r.fatal
            if r.ended is None:
                raise RemoteError("closed", f"the server closed the session before session.ended "
                                            f"({r.stepped} of {r.turns} micro-turns received)")
        return self._output_native(r)

    async def _send_native(self, ws, r: _Run, audio: np.ndarray, video, ahead: float) -> None:
        """Each micro-turn: its typed text, its camera frame, its audio (see the module docstring for the pacing)."""
        w = int(round(r.delta * SAMPLE_RATE))
        lead = int(math.floor(ahead / r.delta + 1e-9))  # windows that may be in flight
        t0 = time.perf_counter()
        for t in range(r.turns):
            if self.pace == "realtime":
                await asyncio.sleep(max(0.0, t0 + (t + 1) * r.delta - time.perf_counter()))
            held = time.perf_counter()
            await self._wait_stepped(r, t + 1 - lead)
            r.held_s += time.perf_counter() - held
            a, b = t * r.delta, (t + 1) * r.delta
            for e in r.scenario.text:
                if a - 1e-9 <= e.t < b - 1e-9:
                    for chunk in text_chunks(e.text):
                        await ws.send(json.dumps({"type": "text", "text": chunk}))
            frame = _frame_at(video, a)
            if frame is not None:
                jpeg = await asyncio.to_thread(encode_jpeg, frame)
                await ws.send(json.dumps({"type": "frame", "jpeg": base64.b64encode(jpeg).decode()}))
            elif video is not None and t and _frame_at(video, a - r.delta) is not None:  # the video has ended
                await ws.send(json.dumps({"type": "frame", "jpeg": None}))
            await ws.send(float_to_pcm16(audio[t * w : (t + 1) * w]))
            r.sent_at[t] = time.perf_counter()

    async def _wait_stepped(self, r: _Run, n: int) -> None:
        """Wait until the outputs of the first ``n`` micro-turns have arrived (RemoteError after ``timeout`` seconds
        without any progress, or when the session ended)."""
        while r.stepped < n:
            if r.fatal is not None:
                raise r.fatal
            if r.closed:
                raise RemoteError("closed", f"the server closed the session after {r.stepped} of {r.turns} "
                                            "micro-turns")
            r.progress.clear()
            try:
                await asyncio.wait_for(r.progress.wait(), self.timeout)
            except asyncio.TimeoutError:
                raise RemoteError("timeout", f"no output for {self.timeout:g} s (micro-turn {r.stepped} of "
                                             f"{r.turns})") from None

    async def _receive_native(self, ws, r: _Run) -> None:
        import websockets

        try:
            async for m in ws:
                if isinstance(m, bytes):
                    self._audio_frame(r, m)
                    continue
                d = json.loads(m)
                kind = d.get("type")
                if kind == "word":
                    r.words.append(Word(str(d["w"]), float(d["start"]), float(d["end"]), "agent"))
                elif kind == "text.delta":
                    r.stepped = max(r.stepped, int(d["t"]) + 1)
                elif kind == "event":
                    r.events.append({k: d[k] for k in ("t", "kind", "text", "query", "error") if k in d})
                elif kind == "stats":
                    r.last_stats = d
                    r.stepped = max(r.stepped, int(d["t"]))
                    if d.get("step_ms") is not None:
                        r.step_ms.append(float(d["step_ms"]))
                elif kind == "error":
                    self._error(r, d.get("code", "error"), d.get("message", ""), bool(d.get("fatal")))
                elif kind == "session.ended":
                    r.ended = d
                r.wake()
        except websockets.ConnectionClosed:
            pass
        finally:
            r.closed = True
            r.wake()

    def _audio_frame(self, r: _Run, data: bytes) -> None:
        if len(data) < AUDIO_HEADER.size or data[:4] != AUDIO_MAGIC:
            self._error(r, "bad_output", "an agent audio frame without the MTAU header", False)
            return
        _, t, start_ms, _flags = AUDIO_HEADER.unpack_from(data)
        x = np.frombuffer(data[AUDIO_HEADER.size :], "<i2").astype(np.float32) / 32768.0
        a = int(round(start_ms * r.rate_out / 1000))
        n = max(0, min(len(x), len(r.agent_audio) - a))
        r.agent_audio[a : a + n] = x[:n]
        if self.pace == "realtime" and t in r.sent_at:
            r.late_ms.append((time.perf_counter() - r.sent_at.pop(t)) * 1000)
        r.stepped = max(r.stepped, t + 1)
        r.wake()

    def _error(self, r: _Run, code: str, message: str, fatal: bool) -> None:
        r.errors[code] = r.errors.get(code, 0) + 1
        if fatal and r.fatal is None:
            r.fatal = RemoteError(code, message)
        elif code == "too_fast":
            warnings.warn(f"remote agent, scenario {r.scenario.id!r}: the server dropped audio ({message}); the "
                          "session clock no longer matches the scenario's", RuntimeWarning, stacklevel=2)

    def _output_native(self, r: _Run) -> AgentOutput:
        st = r.last_stats
        stats = {"protocol": "native", "clock": f"remote-{self.pace}", "steps": st.get("steps", r.ended.get("t")),
                 "stepped": r.ended.get("t"), "overruns": st.get("overruns", 0), "step_ms": _spread(r.step_ms),
                 "dropped_s": st.get("dropped_s", 0.0), "errors": dict(r.errors), "held_s": round(r.held_s, 3)}
        if self.pace == "realtime":
            stats["late_ms"] = _spread(r.late_ms)
        audio = r.agent_audio if r.rate_out == SAMPLE_RATE else _exact(resample(r.agent_audio, r.rate_out),
                                                                       n_samples(r.scenario.duration))
        return AgentOutput(r.words, audio, sorted(r.events, key=lambda e: e.get("t", 0)), stats)

    # ---------------------------------------------------------------- the OpenAI-Realtime endpoint
    async def _realtime(self, scenario: Scenario) -> AgentOutput:
        import websockets

        delta, w24 = REALTIME_DELTA, int(round(REALTIME_DELTA * REALTIME_RATE))
        turns = int(math.ceil(scenario.duration / delta - 1e-9))
        audio16, video = await asyncio.to_thread(_inputs, scenario, turns * int(round(delta * SAMPLE_RATE)))
        audio = _exact(resample(audio16, SAMPLE_RATE, REALTIME_RATE), turns * w24)
        rt = _RealtimeOut(delta, np.zeros(n_samples(scenario.duration, REALTIME_RATE), np.float32))
        async with self._connect() as ws:
            await _expect(ws, "session.created", self.timeout, error_path=("error",))
            rt.t0 = time.perf_counter()
            receiver = asyncio.create_task(self._receive_realtime(ws, rt))
            try:
                for t in range(turns):
                    await asyncio.sleep(max(0.0, rt.t0 + (t + 1) * delta - time.perf_counter()))
                    if rt.fatal is not None:
                        raise rt.fatal
                    a, b = t * delta, (t + 1) * delta
                    for e in scenario.text:
                        if a - 1e-9 <= e.t < b - 1e-9:
                            for chunk in text_chunks(e.text):
                                item = {"type": "message", "role": "user",
                                        "content": [{"type": "input_text", "text": chunk}]}
                                await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
                    rt.frames_skipped += _frame_at(video, a) is not None
                    chunk = base64.b64encode(float_to_pcm16(audio[t * w24 : (t + 1) * w24])).decode()
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                await asyncio.sleep(2 * delta)  # the last windows' outputs
                if receiver.done() and rt.fatal is None:
                    raise RemoteError("closed", "the server closed the session before its end")
            except websockets.ConnectionClosed:
                await asyncio.wait({receiver}, timeout=1.0)  # its error message came before the close
                if rt.fatal is None:
                    raise RemoteError("closed", "the server closed the session before its end") from None
            finally:
                receiver.cancel()
        if rt.fatal is not None:
            raise rt.fatal
        rt.close_word()
        words = [x for x in rt.words if x.start < scenario.duration]
        out = _exact(resample(rt.audio, REALTIME_RATE, SAMPLE_RATE), n_samples(scenario.duration))
        stats = {"protocol": "realtime", "clock": "remote-realtime", "responses": rt.responses,
                 "errors": dict(rt.errors), "frames_skipped": rt.frames_skipped}
        return AgentOutput(words, out, [], stats)

    async def _receive_realtime(self, ws, rt: "_RealtimeOut") -> None:
        import websockets

        try:
            async for m in ws:
                d = json.loads(m) if isinstance(m, str) else {}
                kind = d.get("type", "")
                now = time.perf_counter()
                if kind in ("response.output_audio.delta", "response.audio.delta"):
                    rt.audio_delta(now, d.get("response_id"), base64.b64decode(d.get("delta", "")))
                elif kind in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
                    rt.text_delta(now, d.get("delta", ""))
                elif kind == "response.created":
                    rt.responses += 1
                elif kind == "response.done":
                    rt.close_word()
                elif kind == "error":
                    err = d.get("error") or {}
                    code = err.get("code") or "error"
                    rt.errors[code] = rt.errors.get(code, 0) + 1
                    if code in FATAL:
                        rt.fatal = rt.fatal or RemoteError(code, err.get("message", ""))
        except websockets.ConnectionClosed:
            pass


@dataclass
class _RealtimeOut:
    """What the Realtime endpoint said, placed on the input's clock by arrival time (see the module docstring)."""

    delta: float
    audio: np.ndarray  # 24 kHz
    t0: float = 0.0
    words: list[Word] = field(default_factory=list)
    current: list | None = None  # [text, start, end] of the word being spoken
    pos: int = 0  # end of the last audio delta (24 kHz samples)
    response: str | None = None
    responses: int = 0
    frames_skipped: int = 0
    errors: dict = field(default_factory=dict)
    fatal: RemoteError | None = None

    def window(self, now: float) -> float:
        """The start of the output window of the micro-turn whose audio had just been sent at ``now``."""
        return math.floor((now - self.t0) / self.delta + 1e-6) * self.delta

    def audio_delta(self, now: float, response: str | None, pcm: bytes) -> None:
        x = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        a = int(round(self.window(now) * REALTIME_RATE))
        if response == self.response and a - self.pos < self.delta * REALTIME_RATE:
            a = self.pos  # the same utterance going on: keep it gapless (arrival jitter, resampled lengths)
        self.response = response
        n = max(0, min(len(x), len(self.audio) - a))
        self.audio[a : a + n] = x[:n]
        self.pos = a + len(x)

    def text_delta(self, now: float, text: str) -> None:
        start = self.window(now)
        for ch in text:
            if ch.isspace():
                self.close_word()
            elif self.current is None:
                self.current = [ch, start, start + self.delta]
            else:
                self.current[0] += ch
                self.current[2] = start + self.delta

    def close_word(self) -> None:
        if self.current is not None:
            text, start, end = self.current
            self.words.append(Word(text, round(start, 4), round(end, 4), "agent"))
            self.current = None


# ---------------------------------------------------------------- helpers
async def _expect(ws, kind: str, timeout: float, error_path: tuple = ()) -> dict:
    """The next JSON message of type ``kind`` (others skipped); an error message before it raises RemoteError."""
    end = time.monotonic() + timeout
    while True:
        try:
            m = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
        except asyncio.TimeoutError:
            raise RemoteError("timeout", f"no {kind} within {timeout:g} s") from None
        except Exception as e:  # websockets.ConnectionClosed: the server refused us (its error came first)
            raise RemoteError("closed", f"the server closed the connection before {kind}: {e}") from None
        if not isinstance(m, str):
            continue
        d = json.loads(m)
        if d.get("type") == kind:
            return d
        if d.get("type") == "error":
            err = d.get(error_path[0]) if error_path else d
            raise RemoteError(str(err.get("code", "error")), str(err.get("message", "")))


def _inputs(scenario: Scenario, n: int) -> tuple[np.ndarray, tuple[np.ndarray, float] | None]:
    """The user's audio (16 kHz, padded with silence to n samples) and video of a scenario."""
    x = np.zeros(n, np.float32)
    user = scenario.load_audio(SAMPLE_RATE)[:n]
    x[: len(user)] = user
    return x, scenario.load_video()


def text_chunks(text: str, limit: int = MAX_TEXT) -> list[str]:
    """A typed text as the messages that carry it (the server takes at most ``limit`` characters a message): cut at
    the last whitespace within the limit when there is one, each chunk stripped (a blank one would be refused as
    ``bad_text``); a blank text is no message at all. In order, the chunks hold all the text but the whitespace at
    its ends and at each cut; each enters the model with a ``<typed>`` marker of its own. The server takes a chunk
    only while the text before it would enter within 30 s (about 300 tokens, some 1,000 characters of English), so the
    rest of a longer text is refused (``text_backlog``, counted in the run's errors) as it would be for any client."""
    text, out = text.strip(), []
    while text:
        cut = len(text)
        if cut > limit:
            spaces = [m.start() for m in re.finditer(r"\s", text[1 : limit + 1])]
            cut = spaces[-1] + 1 if spaces else limit
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return out


def _frame_at(video, t: float) -> np.ndarray | None:
    """The camera frame shown at second t (None after the last frame or without video)."""
    if video is None:
        return None
    frames, fps = video
    k = int(math.floor(t * fps + 1e-9))
    return frames[k] if 0 <= k < len(frames) else None


def _exact(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: min(n, len(x))] = x[:n]
    return out


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """An RGB uint8 [H, W, 3] frame as a high-quality JPEG (PyAV's mjpeg, 4:4:4), scaled down to at most
    ``MAX_SIDE`` pixels a side."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), "rgb24")
    h, w = rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    w, h = max(1, int(w * scale)), max(1, int(h * scale))
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj444p"
    ctx.time_base = fractions.Fraction(1, 25)
    ctx.options = {"qmin": "1", "qmax": "3"}
    frame = frame.reformat(width=w, height=h, format="yuvj444p")
    return b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))


def _run_sync(coro):
    """Run a coroutine to completion from sync code, also when the caller is inside an event loop (a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = e

    th = threading.Thread(target=target, name="remote-agent")
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
