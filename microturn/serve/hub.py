"""The serving core shared by both WebSocket protocols: one ``Engine`` per process, stepped on the audio clock.

- ``Hub`` owns the engine and its stepping task. Connections queue their input (audio at 16 kHz, typed text, camera
  frames) on their ``Client``; the stepping task wakes up when input arrives, applies the queued input and ticks the
  engine in a worker thread (``asyncio.to_thread``), so the event loop never waits on the model, then hands each
  stepped session's outputs to its connection. Sessions step when their audio arrives: time is the audio clock.
- ``Connection`` is the part of a WebSocket handler both protocols share: admission (origin, bearer token, session
  limit), one sender task fed by a bounded outbox, receiving with an idle time-out, closing cleanly.

Thread rules: only the stepping worker thread touches the engine (under ``Hub.busy``); the event loop only appends
to a client's input deque and reads its counters.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
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
from ..stream.tokenizer import DLG, DLG_END, EOT, PAD, SPECIALS
from .protocol import MAX_MESSAGE

log = logging.getLogger("microturn.serve")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_INTERNAL = 1000, 1001, 1008, 1013, 1011
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass
class Settings:
    """Server limits and security settings (see docs/protocol.md)."""

    max_sessions: int = 32
    token: str | None = None  # bearer token required by both endpoints, or None
    allowed_origins: list[str] | None = None  # None: same host + localhost; ["*"]: any
    idle_timeout: float = 60.0  # seconds without a client message before the session is closed
    max_ahead_s: float = 2.0  # audio received but not yet stepped, beyond which input audio is dropped
    max_outbox: int = 512  # queued server messages beyond which a client that does not read is closed
    max_errors: int = 100  # protocol errors after which a client is closed
    stats_every: int = 5  # micro-turns between stats messages
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
    """The agent's spoken text per micro-turn: out tokens minus controls and minus delegation queries."""

    def __init__(self, tok):
        self.tok, self.in_query = tok, False

    def push(self, tokens: list[int]) -> str:
        keep = []
        for t in tokens:
            if t in (EOT, PAD):
                break
            if t == DLG:
                self.in_query = True
            elif t == DLG_END:
                self.in_query = False
            elif not self.in_query and t >= len(SPECIALS):
                keep.append(t)
        return self.tok.decode(keep) if keep else ""


def voiced(audio: np.ndarray | None) -> bool:
    return audio is not None and bool(np.any(audio))


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

    def ahead_s(self) -> float:
        """Seconds of audio accepted but not yet stepped."""
        L = self.session.layout
        return max(0.0, (self.received - self.session.t * L.samples) / 16000)


class Busy(RuntimeError):
    """All session slots are in use."""


class Hub:
    """One engine, its clients and the stepping task."""

    def __init__(self, model: InteractionModel, settings: Settings, sampling: Sampling | None = None):
        self.settings = settings
        self.engine = Engine(model, capacity=settings.max_sessions, sampling=sampling or Sampling(),
                             generate_audio=True, simulated=False)
        self.layout = self.engine.layout
        self.busy = threading.Lock()  # held by whoever touches the engine (the stepping thread, open, close)
        self.clients: dict[int, Client] = {}
        self.reserved = 0  # slots being opened
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.ticks = 0
        self.failures = 0

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
            bg = self._background()
            session = await asyncio.to_thread(self._locked, self.engine.open, bg)
        except RuntimeError as e:
            raise Busy(str(e)) from None
        finally:
            self.reserved -= 1
        client = Client(session, sink, fail)
        self.clients[session.slot] = client
        return client

    async def detach(self, client: Client) -> None:
        """Free the client's slot (idempotent)."""
        if self.clients.get(client.session.slot) is client:
            del self.clients[client.session.slot]
            await asyncio.to_thread(self._locked, client.session.close)

    async def finish(self, client: Client, timeout: float = 2.0) -> list:
        """End of input: wait (bounded) for queued input to be stepped, then return the last words to become final."""
        end = time.monotonic() + timeout
        while (client.inputs or client.session.ready()) and time.monotonic() < end:
            self.poke()
            await asyncio.sleep(0.01)
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
        """Queue 16 kHz audio. False (and the audio is dropped) when it would run more than ``max_ahead_s`` ahead
        of the stepping: the client sends faster than real time or the server cannot keep up."""
        if client.ahead_s() + len(x) / 16000 > self.settings.max_ahead_s:
            client.dropped += len(x)
            self.poke()
            return False
        client.received += len(x)
        client.inputs.append(("audio", x))
        self.poke()
        return True

    def push_text(self, client: Client, text: str) -> None:
        client.inputs.append(("text", text))
        self.poke()

    def push_frame(self, client: Client, rgb: np.ndarray) -> None:
        client.inputs.append(("frame", rgb))
        self.poke()

    # ---- stepping ----
    async def run(self) -> None:
        """The stepping task: wake on input, tick until no session has a micro-turn ready, deliver outputs."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                try:
                    stepped = await asyncio.to_thread(self._step)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failing model must not kill the server: log it, report it to the clients
                    log.exception("engine tick failed")
                    self.failures += 1
                    self._fail_all()
                    break
                for client in stepped:
                    self._deliver(client)
                if not stepped:
                    break

    def _step(self) -> list[Client]:
        """Worker thread: apply every client's queued input in order, then one batched tick."""
        with self.busy:
            clients = list(self.clients.values())
            for c in clients:
                self._apply(c)
            stepped = self.engine.tick()
            self.ticks += bool(stepped)
        by_session = {id(c.session): c for c in clients}
        return [by_session[id(s)] for s in stepped if id(s) in by_session]

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
            try:
                client.sink(outs)
            except Exception:  # a sink bug ends that client's delivery, not the stepping
                log.exception("delivering outputs failed")

    def _fail_all(self) -> None:
        for c in list(self.clients.values()):
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
        await self.ws.accept()
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


__all__ = ["Settings", "Hub", "Client", "Connection", "Busy", "SpokenText", "voiced", "origin_allowed", "token_ok",
           "bearer", "MAX_MESSAGE", "CLOSE_NORMAL", "CLOSE_POLICY", "CLOSE_TRY_LATER", "CLOSE_GOING_AWAY"]
