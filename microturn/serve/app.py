"""The microturn server: a FastAPI app with the native protocol (``/v1/stream``), the OpenAI-Realtime-compatible
endpoint (``/v1/realtime``), the browser page (``/``) and a health check (``/healthz``).

One model per process; ``hub.Hub`` steps every session in batched engines on the audio clock. ``create_app`` takes
a model object (tests pass a tiny random one); ``serve`` loads a checkpoint (the bundled model by default) and runs
uvicorn on loopback unless told otherwise. The wire protocol is documented in ``docs/protocol.md``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..codecs.audio import float_to_pcm16, pcm16_to_float
from ..model.model import InteractionModel, Sampling
from ..runtime.background import Background
from ..runtime.session import TurnOutput
from . import protocol as P
from .hub import CLOSE_NORMAL, CLOSE_POLICY, Connection, Hub, Resampler, Settings, SpokenText, token_ok, voiced

log = logging.getLogger("microturn.serve")
STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; "
                               "media-src 'self' blob:; style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# ---------------------------------------------------------------- the native protocol
class NativeConnection(Connection):
    """One client of ``/v1/stream`` (protocol version 1)."""

    def __init__(self, ws: WebSocket, hub: Hub):
        super().__init__(ws, hub)
        self.resample: Resampler | None = None
        self.spoken = SpokenText(hub.tok)
        self.decoding: asyncio.Task | None = None  # the camera frame being decoded

    def error_message(self, code: str, message: str, fatal: bool) -> str:
        return P.error(code, message, fatal)

    async def on_open(self) -> None:
        s, L = self.settings, self.hub.layout
        self.send(P.hello(delta=L.delta, sample_rate_in=[P.MIN_RATE, P.MAX_RATE], sample_rate_out=P.OUT_RATE,
                          max_message=P.MAX_MESSAGE, max_ahead_s=s.max_ahead_s, idle_timeout=s.idle_timeout,
                          auth_required=not self.authenticated, model=self.hub.model_info))

    async def handle(self, data: bytes | str) -> None:
        try:
            msg = P.parse(data)
        except P.ProtocolError as e:
            self.bad(e.code, e.message)
            return
        if isinstance(msg, P.SessionStart):
            await self.start(msg)
        elif self.client is None:
            self.bad("not_started", "send session.start before audio, text or frames")
        elif isinstance(msg, P.AudioIn):
            self.audio(msg.pcm)
        elif isinstance(msg, P.TextIn):
            try:
                self.hub.push_text(self.client, msg.text)
            except P.ProtocolError as e:  # text_backlog: the client's text is fine, it comes too fast: not counted
                self.error(e.code, e.message, every=1.0)
        elif isinstance(msg, P.FrameIn):
            self.frame(msg.jpeg)
        elif isinstance(msg, P.SessionEnd):
            await self.end()

    async def start(self, msg: P.SessionStart) -> None:
        if self.client is not None:
            self.bad("already_started", "the session has already started")
            return
        if not self.authenticated and not token_ok(self.settings.token, msg.token):
            await self.close(CLOSE_POLICY, "unauthorized",
                             ("unauthorized", "a valid token is required (Authorization: Bearer, ?token= or "
                                              "session.start.token)"))
            return
        self.authenticated = True
        if not await self.attach():
            return
        self.resample = Resampler(msg.sample_rate, lead=True)
        L = self.hub.layout
        self.send(P.encode("session.started", session_id=f"s{id(self.client.session):x}", sample_rate=msg.sample_rate,
                           delta=L.delta, audio_out={"format": "pcm16", "rate": P.OUT_RATE,
                                                     "header_bytes": P.AUDIO_HEADER.size}))

    def audio(self, pcm: bytes) -> None:
        x = self.resample(pcm16_to_float(pcm))
        if len(x) and not self.hub.push_audio(self.client, x):
            self.too_fast()

    def frame(self, jpeg: bytes | None) -> None:
        """Decode in a worker thread while this connection's audio goes on arriving; a frame arriving while the
        previous one is still being decoded is dropped (the model uses one frame per micro-turn anyway). None: the
        camera is off from now (after a frame still being decoded)."""
        if jpeg is None:
            self.decoding = asyncio.create_task(self._camera_off(self.decoding))
            return
        if self.decoding is not None and not self.decoding.done():
            self.error("frame_dropped", "camera frame dropped: the previous one is still being decoded", every=5.0)
            return
        self.decoding = asyncio.create_task(self._decode(jpeg))

    async def _decode(self, jpeg: bytes) -> None:
        try:
            rgb = await asyncio.to_thread(self.hub.camera_frame, jpeg)
        except P.ProtocolError as e:
            self.bad(e.code, e.message)
            return
        except Exception:  # nothing a client sends may crash the server
            log.exception("decoding a camera frame failed")
            self.bad("bad_frame", "the camera frame could not be decoded")
            return
        if self.client is not None and not self.closing:
            self.hub.push_frame(self.client, rgb)

    async def _camera_off(self, decoding: asyncio.Task | None) -> None:
        if decoding is not None:
            await asyncio.wait({decoding})
        if self.client is not None and not self.closing:
            self.hub.push_frame(self.client, None)

    async def end(self) -> None:
        if self.decoding is not None:
            await self.decoding  # a frame sent before session.end joins the session
        words = await self.hub.finish(self.client, self.resample.flush())
        for w in words:
            self.send(P.encode("word", w=w.w, start=w.start, end=w.end))
        self.send(self.stats_message())
        self.send(P.encode("session.ended", t=self.client.session.t, words=len(self.client.session.words)))
        await self.close(CLOSE_NORMAL, "session ended")

    # ---- output (called on the event loop by the stepping task) ----
    def deliver(self, outs: list[TurnOutput]) -> None:
        L = self.hub.layout
        for o in outs:
            start = round((o.t + 1) * L.delta, 6)
            text = self.spoken.push(o.said)
            if text:
                self.send(P.encode("text.delta", t=o.t, start=start, text=text))
            if o.audio is not None:
                self.send(P.audio_frame(o.t, round(start * 1000), float_to_pcm16(o.audio), voiced(o.audio)))
            for w in o.words:
                self.send(P.encode("word", w=w.w, start=w.start, end=w.end))
            for e in o.events:
                self.send(P.encode("event", kind=e.kind, t=e.t, text=e.text))
            for a in o.answers:
                self.send(P.encode("event", kind="answer", t=a.t, query=a.query, text=a.text, error=a.error))
            if (o.t + 1) % self.settings.stats_every == 0:
                self.send(self.stats_message())

    def stats_message(self) -> str:
        c = self.client
        st = c.session.stats
        recent = list(st.step_ms)[-self.settings.stats_every :]
        return P.encode("stats", t=c.session.t, steps=st.steps, step_ms=round(float(np.mean(recent)), 2) if recent
                        else None, overruns=st.overruns, ahead_s=round(c.ahead_s(), 3), dropped_s=c.dropped / 16000,
                        sessions=len(self.hub.clients))


# ---------------------------------------------------------------- the app
def create_app(model: InteractionModel | None = None, *, max_sessions: int = 32, token: str | None = None,
               allowed_origins: list[str] | None = None, idle_timeout: float = 60, max_ahead_s: float = 2.0,
               gather_ms: float = 50.0, batch: int = 32, background_factory: Callable[[], Background] | None = None,
               sampling: Sampling | None = None, model_name: str | None = None,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The server app. ``model``: an ``InteractionModel`` (None: the bundled checkpoint, or an untrained model with
    a warning). ``token``: a bearer token both endpoints require. ``allowed_origins``: browser origins allowed
    (None: the page's own host and localhost; ["*"]: any). ``background_factory``: makes each session's
    ``Background`` (default: local tools). ``max_ahead_s``: audio a session may have waiting for the stepping before
    more is dropped. ``gather_ms``: how long a tick may wait for other sessions' windows to share the batch.
    ``batch``: rows of the largest engine (engines of 1, 2, 4, ... rows are created as sessions arrive).
    ``allowed_hosts``: the Host names WebSockets are admitted with besides loopback's (None or ["*"]: any; ``serve``
    listening on loopback admits loopback's only, unless told others: a defence against DNS rebinding)."""
    if model is None:
        model, model_name = load_model(None)
    settings = Settings(max_sessions=max_sessions, token=token, allowed_origins=allowed_origins,
                        idle_timeout=idle_timeout, max_ahead_s=max_ahead_s, gather_ms=gather_ms, batch=batch,
                        background_factory=background_factory, allowed_hosts=allowed_hosts)
    hub = Hub(model, settings, sampling)
    hub.model_info = {"name": model_name or "custom", "params": model.n_params(), "trained": None if model_name is None
                      else model_name != "UNTRAINED"}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(hub.warm_up)
        hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(title="microturn", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    _routes(app, hub)
    return app


def _routes(app: FastAPI, hub: Hub) -> None:
    from .realtime import RealtimeConnection

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/healthz")
    async def health():
        return JSONResponse({"ok": not hub.failing, "failures": hub.failures, "sessions": len(hub.clients),
                             "max_sessions": hub.settings.max_sessions, "delta": hub.layout.delta, "ticks": hub.ticks,
                             "model": hub.model_info, "protocol_version": P.VERSION})

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await NativeConnection(ws, hub).serve()

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        await RealtimeConnection(ws, hub).serve()

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


# ---------------------------------------------------------------- running it
def load_model(checkpoint: str | Path | None) -> tuple[InteractionModel, str]:
    """The model to serve and its name. An explicit checkpoint must load; without one the bundled model is used,
    or, when there is none yet, an untrained model of the ``cpu`` preset with a clear warning."""
    from ..model import checkpoint as ckpt
    from ..model.config import preset
    from ..stream.tokenizer import default_tokenizer

    if checkpoint is not None:
        return ckpt.load(checkpoint), str(checkpoint)
    try:
        return ckpt.load_default(), "bundled"
    except ckpt.CheckpointError as e:
        print(f"microturn serve: {e}\nmicroturn serve: serving an UNTRAINED model (random weights): the protocol "
              "works, the agent's words and speech are noise. Pass --checkpoint to serve a trained one.",
              file=sys.stderr)
        return InteractionModel(preset("cpu", vocab_size=default_tokenizer().vocab_size)), "UNTRAINED"


def server_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, **kw):
    """uvicorn settings for the app: WebSocket frames up to 4x ``MAX_MESSAGE`` reach the app (which refuses those
    over ``MAX_MESSAGE`` with an error message); larger ones are closed by uvicorn with code 1009."""
    import uvicorn

    opts = dict(host=host, port=port, ws_max_size=4 * P.MAX_MESSAGE, ws_per_message_deflate=False,
                log_level="warning", lifespan="on")
    return uvicorn.Config(app, **(opts | kw))


def serve(host: str = "127.0.0.1", port: int = 8000, checkpoint: str | Path | None = None, **kw) -> None:
    """Run the server (blocking). Binds to loopback by default; other keywords go to ``create_app``."""
    import uvicorn

    model, name = load_model(checkpoint)
    sampling = kw.pop("sampling", None)
    if isinstance(sampling, dict):  # settings over the checkpoint's own (model.Sampling.of)
        sampling = Sampling.of(model, **sampling)
    local = host in ("127.0.0.1", "localhost", "::1")
    if local and kw.get("allowed_hosts") is None:  # on loopback: loopback's names only, unless told others
        kw["allowed_hosts"] = []
    app = create_app(model, model_name=name, sampling=sampling, **kw)
    if not local and not kw.get("token"):
        print(f"microturn serve: WARNING: listening on {host} without a token; anyone who can reach it can use it",
              file=sys.stderr)
    print(f"microturn serve: http://{host}:{port}/  (native: ws://{host}:{port}/v1/stream, realtime: "
          f"ws://{host}:{port}/v1/realtime)", file=sys.stderr)
    uvicorn.Server(server_config(app, host, port)).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m microturn.serve.app``: the server with its options (``microturn serve`` does the same)."""
    import argparse

    p = argparse.ArgumentParser(prog="microturn serve", description="Serve a microturn model over WebSockets.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--token", default=None, help="bearer token both endpoints require")
    p.add_argument("--max-sessions", type=int, default=32,
                   help="sessions served at once; one more is refused as busy")
    p.add_argument("--idle-timeout", type=float, default=60,
                   help="seconds without a client message before a session is closed")
    p.add_argument("--allowed-origin", action="append", dest="allowed_origins", default=None,
                   help="browser origin allowed to connect (repeatable; default: same host and localhost)")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", default=None,
                   help="a Host name WebSockets may use besides loopback's, e.g. behind an HTTPS proxy that passes "
                        "the client's Host (repeatable; '*': any; default on loopback: loopback's only)")
    p.add_argument("--batch", type=int, default=32, help="rows of the largest engine (engines grow 1, 2, 4, ...)")
    p.add_argument("--gather-ms", type=float, default=50.0, help="how long a tick waits to batch sessions")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--temperature", type=float, default=None, help="text sampling temperature (default 0: greedy)")
    p.add_argument("--speak-threshold", type=float, default=None,
                   help="greedy: speak when the words' total probability exceeds this (default: the checkpoint's)")
    p.add_argument("--warps", default=None, help="hear the audio through these vocal-tract scales too and decide on "
                   "their mean (comma-separated, e.g. 0.9,1,1.1; none: the audio alone; default: the checkpoint's); "
                   "costs up to their number times the model's compute")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        p.error(f"--port must be 1-65535, got {a.port}")
    for flag, v in (("--max-sessions", a.max_sessions), ("--batch", a.batch), ("--threads", a.threads or 1)):
        if v < 1:
            p.error(f"{flag} must be at least 1, got {v}")
    if not (math.isfinite(a.idle_timeout) and a.idle_timeout > 0):
        p.error(f"--idle-timeout must be a finite number of seconds above 0, got {a.idle_timeout}")
    if not (math.isfinite(a.gather_ms) and a.gather_ms >= 0):
        p.error(f"--gather-ms must be a finite number of at least 0, got {a.gather_ms}")
    sampling = {k: v for k, v in (("temperature", a.temperature), ("speak_threshold", a.speak_threshold))
                if v is not None}
    try:
        if a.warps is not None:
            sampling["warps"] = Sampling.parse_warps(a.warps)
        Sampling(**sampling)
    except ValueError as e:
        p.error(str(e))
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    serve(a.host, a.port, a.checkpoint, token=a.token, max_sessions=a.max_sessions, idle_timeout=a.idle_timeout,
          allowed_origins=a.allowed_origins, allowed_hosts=a.allowed_hosts, batch=a.batch, gather_ms=a.gather_ms,
          sampling=sampling)


if __name__ == "__main__":
    main()
