"""The serving core shared by both WebSocket protocols: one model per process, its sessions stepped in batched
engines on the audio clock.

- ``Hub`` owns the engines and the stepping task. Connections queue their input (audio at 16 kHz, typed text,
  camera frames) on their ``Client``; the stepping task wakes up when input arrives, applies the queued input and
  ticks the engines in a worker thread (``asyncio.to_thread``), so the event loop never waits on the model, then
  hands each stepped session's outputs to its connection. Sessions step when their audio arrives: time is the audio
  clock.
- Engines are created on demand with 1, 2, 4, ... up to ``batch`` rows (one model, shared weights), so the KV-cache
  memory grows with the sessions; a tick computes only the rows with a micro-turn ready. New sessions go to the
  smallest engine with a free row.
- ``Connection`` is the part of a WebSocket handler both protocols share: admission (origin, bearer token, session
  limit), one sender task fed by a bounded outbox, receiving with an idle time-out, closing cleanly.

Thread rules: the engines are only touched in worker threads holding ``Hub.busy``; the event loop only appends to a
client's input deque and reads its counters.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..model.model import InteractionModel, Sampling
from ..runtime.background import Background, LocalTools
from ..runtime.session import Engine, Session, TurnOutput
from ..stream.layout import text_tokens, video_frame
from ..stream.tokenizer import default_tokenizer
from . import protocol as P

log = logging.getLogger("microturn.serve")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_INTERNAL = 1000, 1001, 1008, 1013, 1011
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass
class Settings:
    """Server limits and security settings (see docs/protocol.md)."""

    max_sessions: int = 32
    token: str | None = None  # bearer token required by both endpoints, or None
    allowed_origins: list[str] | None = None  # None: same host + localhost; ["*"]: any
    allowed_hosts: list[str] | None = None  # WebSockets' Host names besides loopback's (None or ["*"]: any)
    idle_timeout: float = 60.0  # seconds without a client message before the session is closed
    max_ahead_s: float = 2.0  # audio received but not yet stepped, beyond which input audio is dropped
    max_outbox: int = 512  # queued server messages beyond which a client that does not read is closed
    max_errors: int = 100  # protocol errors after which a client is closed
    max_text_wait_s: float = 30.0  # typed text waiting to enter the model beyond which more is refused
    stats_every: int = 5  # micro-turns between stats messages
    gather_ms: float = 50.0  # a tick waits up to this long for other sessions' windows, so they share the batch
    batch: int = 32  # rows of the largest engine
    background_factory: Callable[[], Background] | None = None


# ---------------------------------------------------------------- admission
def origin_allowed(origin: str | None, host: str | None, allowed: list[str] | None) -> bool:
    """Browsers send Origin; programs usually do not (then it is allowed: the token is the guard there).
    Default policy: the page's own host, or localhost/loopback on any port."""
    if not origin:
        return True
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}
    try:
        o = urlsplit(origin)
    except ValueError:
        return False
    if o.hostname in LOCAL_HOSTS:
        return True
    return bool(host) and o.netloc.lower() == host.lower()


def host_allowed(host: str | None, allowed: list[str] | None) -> bool:
    """Whether a WebSocket's ``Host`` header names loopback or one of ``allowed`` (None or ["*"]: any). A server on
    loopback admits loopback names only (plus those it is told of, a proxy's): a web page whose name an attacker
    re-points at 127.0.0.1 (DNS rebinding) sends its own name, with an Origin that matches it."""
    if allowed is None or "*" in allowed:
        return True
    try:
        name = (urlsplit("//" + (host or "")).hostname or "").rstrip(".")
    except ValueError:
        return False
    try:
        if ipaddress.ip_address(name).is_loopback:
            return True
    except ValueError:
        pass
    return name in LOCAL_HOSTS or name in {a.lower().rstrip(".") for a in allowed}


def token_ok(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def bearer(ws: WebSocket) -> str | None:
    """The token of an ``Authorization: Bearer`` header, else of a ``token`` query parameter."""
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return ws.query_params.get("token")


# ---------------------------------------------------------------- delivery helpers
class SpokenText:
    """The agent's spoken text per micro-turn, from the tokens it said (``TurnOutput.said``: no controls, delegation
    queries or notes). A character whose UTF-8 bytes span micro-turns (byte-level BPE) is held back until it is
    complete."""

    HOLD = 8  # tokens held at most while waiting for the rest of a character

    def __init__(self, tok):
        self.tok, self.pending = tok, []

    def push(self, said: list[int]) -> str:
        self.pending += said
        if not self.pending:
            return ""
        text = self.tok.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < self.HOLD:
            return ""
        self.pending = []
        return text


def voiced(audio: np.ndarray | None) -> bool:
    return audio is not None and bool(np.any(audio))


@functools.cache
def resampler_lag(rate_in: int, rate_out: int) -> int:
    """The most output samples a streaming soxr resampler holds back behind its input (its filter needs samples
    that have not come yet, and it gives its output in blocks), measured once per pair of rates on 1 s of noise fed
    in 10 ms chunks: about 37 ms from 24 or 48 kHz to 16 kHz, 115 ms from 8 kHz."""
    import soxr

    stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32")
    x = np.random.default_rng(0).standard_normal(rate_in).astype(np.float32)
    step, given, lag = max(1, rate_in // 100), 0, 0
    for i in range(0, len(x), step):
        given += len(stream.resample_chunk(x[i : i + step]))
        lag = max(lag, min(i + step, len(x)) * rate_out // rate_in - given)
    return lag


class Resampler:
    """Streaming resampling of one client's audio (soxr keeps the filter state between chunks). ``lead``: start
    with the resampler's lag in silence (``resampler_lag``), so that once a micro-turn's last input byte has come,
    its whole window is there to step (else it waits for the next chunk: a micro-turn late when chunks are whole
    micro-turns); the user is heard that much later, as the resampler would have made them anyway."""

    def __init__(self, rate_in: int, rate_out: int = 16000, lead: bool = False):
        import soxr

        self.stream = None if rate_in == rate_out else soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32")
        self.lead = np.zeros(resampler_lag(rate_in, rate_out), np.float32) if lead and self.stream else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.stream is None:
            return x
        y = self.stream.resample_chunk(x)
        if self.lead is not None:
            y, self.lead = np.concatenate([self.lead, y]), None
        return y

    def flush(self) -> np.ndarray:
        """The samples the filter still holds back, at the end of the input (all of it is heard: a session with a
        lead lasts that much longer)."""
        if self.stream is None:
            return np.zeros(0, np.float32)
        return self.stream.resample_chunk(np.zeros(0, np.float32), last=True)


# ---------------------------------------------------------------- the engine and its clients
@dataclass
class Client:
    """One session as the server sees it: the engine session, input queued for the stepping thread, the sink that
    receives its outputs (called on the event loop), and its counters."""

    session: Session
    sink: Callable[[list[TurnOutput]], None]
    fail: Callable[[], None]  # called on the event loop when the engine failed: the session cannot go on
    inputs: deque = field(default_factory=deque)  # ("audio", float32 16 kHz) | ("text", str) | ("frame", rgb)
    received: int = 0  # samples at 16 kHz accepted so far (queued or applied)
    dropped: int = 0  # samples refused because the client ran ahead of the stepping
    delivered: int = 0  # micro-turns whose outputs have been handed to the sink
    text_until: int = 0  # the micro-turn by which the typed text queued so far will have entered the model

    def ahead_s(self) -> float:
        """Seconds of audio accepted but not yet stepped."""
        L = self.session.layout
        return max(0.0, (self.received - self.session.t * L.samples) / 16000)


class Busy(RuntimeError):
    """All session slots are in use."""


class Hub:
    """One model, the engines that batch its sessions, the clients and the stepping task."""

    def __init__(self, model: InteractionModel, settings: Settings, sampling: Sampling | None = None):
        self.settings, self.model, self.sampling = settings, model, sampling or Sampling.of(model)
        self.tok = default_tokenizer()
        self.layout = model.layout
        self.engines: list[Engine] = []
        self.busy = threading.Lock()  # held by whoever touches the engines (the stepping thread, open, close)
        self.opening = threading.Lock()  # one session opens at a time, so a burst of them builds one engine, not many
        self.clients: dict[int, Client] = {}  # by id(session)
        self.reserved = 0  # slots being opened, or freed (a detached client's row until its session is closed)
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.ticks = 0
        self.failures = 0  # engine ticks that failed since the start
        self.failing = False  # the last tick failed (healthz: not ok until a tick steps sessions again)
        self.model_info: dict = {}

    # ---- lifecycle (event loop) ----
    def start(self) -> None:
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self.run(), name="microturn-stepper")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def warm_up(self) -> None:
        """Create the first engine (blocking), so the first client does not pay for the slow first steps of a fresh
        process (allocation, kernel selection)."""
        with self.opening:
            if not self.engines:
                engine = self._build(1)
                with self.busy:
                    self.engines.append(engine)

    def _build(self, size: int) -> Engine:
        """An engine of ``size`` rows, warmed up by stepping a throw-away session (no lock needed: it is new)."""
        engine = Engine(self.model, capacity=size, sampling=self.sampling, generate_audio=True, simulated=False,
                        tok=self.tok, seed=len(self.engines))
        s = engine.open(Background(LocalTools()))
        try:
            s.push_audio(np.zeros(2 * self.layout.samples, np.float32))
            while engine.tick():
                pass
        finally:
            engine.close(s)
        return engine

    def _open(self, background: Background) -> Session:
        """Worker thread: a session in the smallest engine with a free row; when all are full, a new engine twice
        the size of the last (1, 2, 4, ... ``batch`` rows, within ``max_sessions``), built while the others step.
        Sessions open one at a time (``opening``): those that arrive together while one engine is being built wait
        for it and take its free rows."""
        with self.opening:
            with self.busy:
                for engine in self.engines:
                    if None in engine.sessions:
                        return engine.open(background)
                used = sum(e.capacity for e in self.engines)
                size = min(self.settings.batch, self.settings.max_sessions - used, 2 ** len(self.engines))
                if size < 1:  # every row of max_sessions is built and taken: never an engine beyond them
                    raise Busy(f"all {self.settings.max_sessions} sessions are in use")
            engine = self._build(size)
            with self.busy:
                self.engines.append(engine)
                return engine.open(background)

    def full(self) -> bool:
        return len(self.clients) + self.reserved >= self.settings.max_sessions

    def _background(self) -> Background:
        factory = self.settings.background_factory
        if factory is not None:
            try:
                return factory()
            except Exception:  # a broken factory must not refuse the session: fall back to local tools
                log.exception("background_factory failed; using the local tools")
        return Background(LocalTools())

    async def attach(self, sink: Callable[[list[TurnOutput]], None], fail: Callable[[], None]) -> Client:
        """Open an engine session for a new client. Raises ``Busy`` when every slot is taken."""
        if self.full():
            raise Busy(f"all {self.settings.max_sessions} sessions are in use")
        self.reserved += 1
        try:
            session = await asyncio.to_thread(self._open, self._background())
        finally:
            self.reserved -= 1
        client = Client(session, sink, fail)
        self.clients[id(session)] = client
        return client

    async def detach(self, client: Client) -> None:
        """Free the client's slot (idempotent)."""
        if self.clients.get(id(client.session)) is client:
            del self.clients[id(client.session)]
            self.reserved += 1  # its row is taken until closed: a client admitted meanwhile would find none
            try:
                await asyncio.to_thread(self._locked, client.session.close)
            finally:
                self.reserved -= 1

    async def finish(self, client: Client, tail: np.ndarray | None = None, timeout: float = 2.0) -> list:
        """End of input: ``tail`` (the rest of the client's resampled audio) is queued, the last partial window is
        filled with silence, and every micro-turn of it is stepped; the wait gives up only when the stepping makes
        no progress for ``timeout`` seconds. Returns the last words to become final."""
        window = self.layout.samples
        rest = np.zeros(0, np.float32) if tail is None else tail.astype(np.float32)
        rest = np.concatenate([rest, np.zeros(-(client.received + len(rest)) % window, np.float32)])
        if len(rest):
            client.received += len(rest)
            client.inputs.append(("audio", rest))
        due = client.received // window
        last, since = client.delivered, time.monotonic()
        while client.delivered < due and time.monotonic() - since < timeout:
            self.poke()
            await asyncio.sleep(0.01)
            if client.delivered != last:
                last, since = client.delivered, time.monotonic()
        n = len(client.session.words)
        words = await asyncio.to_thread(self._locked, client.session.finish)
        return words[n:]

    def _locked(self, fn, *args):
        with self.busy:
            return fn(*args)

    # ---- input (event loop) ----
    def poke(self) -> None:
        if self.wake is not None:
            self.wake.set()

    def push_audio(self, client: Client, x: np.ndarray) -> bool:
        """Queue 16 kHz audio. False (and the audio is dropped) when more than ``max_ahead_s`` of earlier audio is
        still waiting to be stepped: the client sends faster than real time or the server cannot keep up. A chunk
        of any size is taken when the stepping has caught up, so a client may send a whole utterance at once."""
        if client.ahead_s() > self.settings.max_ahead_s:
            client.dropped += len(x)
            self.poke()
            return False
        client.received += len(x)
        client.inputs.append(("audio", x))
        self.poke()
        return True

    def push_text(self, client: Client, text: str) -> None:
        """Queue typed text. It enters the model ``n_text_in`` tokens a micro-turn (10 a second), after the text
        still waiting; text that would wait more than ``max_text_wait_s`` for that is refused (``text_backlog``),
        so that a client cannot queue without limit (one long text is taken when nothing waits)."""
        L = self.layout
        now = client.received // L.samples  # the micro-turn it joins (the audio clock)
        start = max(client.text_until, now)
        wait = (start - now) * L.delta
        if wait > self.settings.max_text_wait_s:
            raise P.ProtocolError("text_backlog", f"typed text sent earlier needs {wait:.0f} s more of audio to enter "
                                                  f"the model ({L.n_text_in / L.delta:g} tokens a second); send this "
                                                  f"later")
        client.text_until = start + math.ceil(len(text_tokens(self.tok, text)) / L.n_text_in)
        client.inputs.append(("text", text))
        self.poke()

    def camera_frame(self, jpeg: bytes) -> np.ndarray:
        """JPEG bytes -> the frame at the model's size (call it in a worker thread, not the stepping one): a frame
        waiting for its micro-turn then holds 19 KB, not the 12 MB of a 2048-pixel image, and the stepping thread
        never resizes one while other sessions wait."""
        return video_frame(P.decode_jpeg(jpeg), self.layout)[0]

    def push_frame(self, client: Client, rgb: np.ndarray | None) -> None:
        """Queue a camera frame (None: the camera is off), shown until the next. A micro-turn sees the last frame of
        its window, so a frame queued right after another (nothing between them) replaces it: a client whose clock
        is stopped (no audio) cannot grow its queue with frames alone."""
        try:
            if client.inputs and client.inputs[-1][0] == "frame":
                client.inputs[-1] = ("frame", rgb)
                return
        except IndexError:  # the stepping thread took the last item meanwhile: queue this one after it
            pass
        client.inputs.append(("frame", rgb))
        self.poke()

    # ---- stepping ----
    async def run(self) -> None:
        """The stepping task: wake on input, gather sessions whose windows complete together, tick until no session
        has a micro-turn ready, deliver the outputs."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not any(self._ready(c) for c in self.clients.values()):
                continue  # input arrived but no window is complete yet: it is applied with the next tick
            await self._gather()
            while True:
                try:
                    stepped, broken = await asyncio.to_thread(self._step, list(self.clients.values()))
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failing model must not kill the server: log it, report it to the clients
                    log.exception("engine tick failed")
                    self.failures += 1
                    self.failing = True
                    self._fail(list(self.clients.values()))
                    break
                if stepped:
                    self.failing = False  # a tick stepped sessions again
                self._fail(broken)
                for client in stepped:
                    self._deliver(client)
                if not stepped:
                    break

    def _ready(self, c: Client) -> bool:
        """A whole window of the client's audio has arrived and is not stepped yet (seen from the event loop)."""
        return c.received // self.layout.samples > c.session.t

    async def _gather(self) -> None:
        """Batching: the engine's cost per tick hardly depends on how many sessions it steps, and clients' windows
        complete at different phases; so wait (at most ``gather_ms``) until every attached session is ready."""
        end = time.monotonic() + self.settings.gather_ms / 1000
        while not all(self._ready(c) for c in self.clients.values()):
            left = end - time.monotonic()
            if left <= 0:
                return
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _step(self, clients: list[Client]) -> tuple[list[Client], list[Client]]:
        """Worker thread: apply every client's queued input in order, then one batched tick of each engine.
        Returns the clients stepped and those whose input could not be applied (their sessions end)."""
        broken = []
        with self.busy:
            for c in clients:
                if c.session.closed:  # detached since the stepping took its list of clients
                    c.inputs.clear()
                    continue
                try:
                    self._apply(c)
                except Exception:  # input the session refuses ends that session, not the others
                    log.exception("applying a client's input failed")
                    c.inputs.clear()
                    c.session.close()
                    broken.append(c)
            stepped = []
            for engine in self.engines:
                stepped += engine.tick()
            self.ticks += bool(stepped)
        by_session = {id(c.session): c for c in clients}
        return [by_session[id(s)] for s in stepped if id(s) in by_session], broken

    @staticmethod
    def _apply(c: Client) -> None:
        while c.inputs:
            kind, value = c.inputs.popleft()
            if kind == "audio":
                c.session.push_audio(value)
            elif kind == "text":
                c.session.push_text(value, "typed")
            else:
                c.session.push_frame(value)

    @staticmethod
    def _deliver(client: Client) -> None:
        outs = client.session.drain()
        if outs:
            client.delivered = outs[-1].t + 1
            try:
                client.sink(outs)
            except Exception:  # a sink bug ends that client's delivery, not the stepping
                log.exception("delivering outputs failed")

    @staticmethod
    def _fail(clients: list[Client]) -> None:
        for c in clients:
            try:
                c.fail()
            except Exception:
                log.exception("reporting a failure failed")


# ---------------------------------------------------------------- the shared connection machinery
class Connection:
    """A WebSocket client of either protocol: admission, a single sender fed by an outbox, idle time-outs, errors.

    Subclasses implement ``error_message`` (their error format), ``on_open`` and ``handle`` (one message)."""

    def __init__(self, ws: WebSocket, hub: Hub):
        self.ws, self.hub, self.settings = ws, hub, hub.settings
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.sender: asyncio.Task | None = None
        self.client: Client | None = None
        self.closing = False
        self.errors = 0
        self.authenticated = token_ok(self.settings.token, bearer(ws))
        self._last_error: dict[str, float] = {}

    # ---- format, to be overridden ----
    def error_message(self, code: str, message: str, fatal: bool) -> str:
        raise NotImplementedError

    async def on_open(self) -> None:
        pass

    async def handle(self, data: bytes | str) -> None:
        raise NotImplementedError

    # ---- sending ----
    def send(self, msg: str | bytes) -> None:
        """Queue a message for the sender; a client that stops reading is closed rather than buffered forever."""
        if self.closing:
            return
        if self.outbox.qsize() >= self.settings.max_outbox:
            self._clear_outbox()
            self.error("slow_consumer", "the client is not reading its messages; closing", fatal=True)
            self.closing = True
            self.outbox.put_nowait((CLOSE_POLICY, "client too slow"))
            return
        self.outbox.put_nowait(msg)

    def _clear_outbox(self) -> None:
        while not self.outbox.empty():
            self.outbox.get_nowait()

    def error(self, code: str, message: str, fatal: bool = False, every: float = 0.0) -> None:
        """Queue an error message. ``every``: send this code at most once per that many seconds."""
        now = time.monotonic()
        if every and now - self._last_error.get(code, -1e9) < every:
            return
        self._last_error[code] = now
        if self.outbox.qsize() < self.settings.max_outbox + 2:
            self.outbox.put_nowait(self.error_message(code, message, fatal))

    async def _send_loop(self) -> None:
        while True:
            msg = await self.outbox.get()
            try:
                if isinstance(msg, tuple):
                    await self.ws.close(code=msg[0], reason=msg[1])
                    return
                if isinstance(msg, bytes):
                    await self.ws.send_bytes(msg)
                else:
                    await self.ws.send_text(msg)
            except Exception:  # the client went away: stop sending; the receive side sees the disconnect
                self.closing = True
                return

    async def close(self, code: int, reason: str, message: tuple[str, str] | None = None) -> None:
        """Send an optional fatal error, then close after everything queued so far has been sent."""
        if message:
            self.error(message[0], message[1], fatal=True)
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait((code, reason))
        if self.sender:
            try:
                await asyncio.wait_for(asyncio.shield(self.sender), 5.0)
            except (asyncio.TimeoutError, Exception):
                pass

    def fatal_internal(self) -> None:
        self.error("internal_error", "the model failed to step; the session is closed", fatal=True)
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait((CLOSE_INTERNAL, "internal error"))

    # ---- the connection's life ----
    async def serve(self) -> None:
        try:
            await self.ws.accept()
        except Exception:  # the client left during the handshake
            return
        self.sender = asyncio.create_task(self._send_loop())
        try:
            if await self._admit():
                await self.on_open()
                await self._receive_loop()
        except Exception:  # nothing a client does may crash the server
            log.exception("connection failed")
            await self.close(CLOSE_INTERNAL, "internal error", ("internal_error", "the server failed; sorry"))
        finally:
            if self.client is not None:
                await self.hub.detach(self.client)
            if not self.closing:
                self.closing = True
                self.outbox.put_nowait((CLOSE_NORMAL, "bye"))
            if self.sender:
                try:
                    await asyncio.wait_for(self.sender, 2.0)
                except (asyncio.TimeoutError, Exception):
                    self.sender.cancel()

    async def _admit(self) -> bool:
        s = self.settings
        if not origin_allowed(self.ws.headers.get("origin"), self.ws.headers.get("host"), s.allowed_origins):
            await self.close(CLOSE_POLICY, "origin not allowed",
                             ("forbidden_origin", f"origin {self.ws.headers.get('origin')!r} is not allowed"))
            return False
        if not host_allowed(self.ws.headers.get("host"), s.allowed_hosts):
            await self.close(CLOSE_POLICY, "host not allowed",
                             ("forbidden_host", f"host {self.ws.headers.get('host')!r} is not allowed here (a "
                                                f"loopback name, or one given with --allowed-host)"))
            return False
        if self.hub.full():
            await self.close(CLOSE_TRY_LATER, "server busy",
                             ("busy", f"all {s.max_sessions} sessions are in use; try again later"))
            return False
        return True

    async def attach(self) -> bool:
        """Open the engine session; on a full server, error + close 1013."""
        try:
            self.client = await self.hub.attach(self.deliver, self.fatal_internal)
            return True
        except Busy as e:
            await self.close(CLOSE_TRY_LATER, "server busy", ("busy", f"{e}; try again later"))
            return False

    def deliver(self, outs: list[TurnOutput]) -> None:
        raise NotImplementedError

    async def _receive_loop(self) -> None:
        while not self.closing:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), self.settings.idle_timeout)
            except asyncio.TimeoutError:
                await self.close(CLOSE_GOING_AWAY, "idle timeout",
                                 ("idle_timeout", f"no message for {self.settings.idle_timeout:g} s; closing"))
                return
            except (WebSocketDisconnect, RuntimeError):
                return
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") if msg.get("bytes") is not None else msg.get("text")
            if data is None:
                continue
            await self.handle(data)
            if self.errors > self.settings.max_errors:
                await self.close(CLOSE_POLICY, "too many errors",
                                 ("too_many_errors", f"more than {self.settings.max_errors} bad messages; closing"))

    def bad(self, code: str, message: str) -> None:
        """A non-fatal client error: report it, count it, go on."""
        self.errors += 1
        self.error(code, message)

    def too_fast(self) -> None:
        """Audio dropped because it ran ahead of the stepping: reported at most once a second, not counted."""
        c = self.client
        self.error("too_fast", f"audio more than {self.settings.max_ahead_s:g} s ahead of the stepping was dropped "
                               f"({c.dropped / 16000:.2f} s so far); send audio at real-time pace", every=1.0)


__all__ = ["Settings", "Hub", "Client", "Connection", "Busy", "SpokenText", "voiced", "origin_allowed", "host_allowed",
           "token_ok", "bearer", "Resampler", "CLOSE_NORMAL", "CLOSE_POLICY", "CLOSE_TRY_LATER", "CLOSE_GOING_AWAY"]
