"""The server: a real uvicorn on loopback (a free port, a background thread) and real WebSocket clients.

Native protocol round trip, bad input of every kind (the session goes on, the server serves the next client), the
session limit, token and origin checks, idle time-out, disconnects freeing slots, engine and background failures,
the official ``openai`` realtime client against ``/v1/realtime``, the page, and a fuzz test of the parser.
A tiny random model (depth 2) samples at temperature 1, so it emits words and voiced audio every micro-turn."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.request

import numpy as np
import pytest
import torch
from serving import running
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.model.config import ModelConfig
from microturn.model.model import InteractionModel, Sampling
from microturn.serve import protocol as P
from microturn.serve.app import create_app
from microturn.runtime.background import Background, LocalTools
from microturn.serve.hub import (Busy, Client, Hub, Resampler, Settings, host_allowed, origin_allowed,
                                 resampler_lag)
from microturn.stream.tokenizer import default_tokenizer

torch.set_num_threads(1)  # the machine's 2 cores are shared

DELTA = 0.2
WINDOW = 3200  # samples of one micro-turn at 16 kHz


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32))


def make_app(model, **kw):
    return create_app(model, sampling=Sampling(temperature=1.0), **({"max_sessions": 4} | kw))


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def url(port: int, path: str = "/v1/stream", query: str = "") -> str:
    return f"ws://127.0.0.1:{port}{path}{query}"


def pcm(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    """Noise bursts, PCM16 little-endian."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 3000
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


async def recv_json(ws, kind: str, timeout: float = 10.0) -> dict:
    """The next JSON message of type ``kind`` (others are skipped)."""
    end = time.monotonic() + timeout
    while True:
        m = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
        if isinstance(m, str):
            d = json.loads(m)
            if d["type"] == kind:
                return d


async def recv_all(ws, timeout: float = 15.0) -> tuple[list[dict], list[bytes], int | None]:
    """Everything until the server closes: JSON messages, binary messages, close code."""
    msgs, binary = [], []
    try:
        async with asyncio.timeout(timeout):
            async for m in ws:
                (binary.append(m) if isinstance(m, bytes) else msgs.append(json.loads(m)))
    except TimeoutError:
        return msgs, binary, None
    except websockets.ConnectionClosed:
        pass
    return msgs, binary, ws.close_code


async def start(ws, hello: bool = True, **fields) -> dict:
    """Read the hello (unless already read), start a session, return session.started."""
    if hello:
        assert (await recv_json(ws, "hello"))["version"] == P.VERSION
    await ws.send(json.dumps({"type": "session.start", **fields}))
    return await recv_json(ws, "session.started")


def jpeg(h: int = 48, w: int = 64) -> bytes:
    import av

    frame = av.VideoFrame.from_ndarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8), "rgb24")
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = __import__("fractions").Fraction(1, 25)
    return b"".join(bytes(p) for p in ctx.encode(frame.reformat(format="yuvj420p")) + ctx.encode(None))


async def round_trip(port: int) -> None:
    async with websockets.connect(url(port)) as ws:
        started = await start(ws, sample_rate=16000)
        assert started["delta"] == DELTA and started["audio_out"]["header_bytes"] == P.AUDIO_HEADER.size
        audio = pcm(2.0)
        sizes = [1234, 3001, 777, 4999, 1]  # samples: odd sizes, never aligned with the 200 ms windows
        i, k = 0, 0
        while i < len(audio):
            n = 2 * sizes[k % len(sizes)]
            await ws.send(audio[i : i + n])
            i, k = i + n, k + 1
            if k == 3:
                await ws.send(json.dumps({"type": "text", "text": "hello there"}))
                await ws.send(json.dumps({"type": "frame", "jpeg": base64.b64encode(jpeg()).decode()}))
            await asyncio.sleep(0.01)
        await ws.send(json.dumps({"type": "session.end"}))
        msgs, binary, code = await recv_all(ws)
    assert code == 1000
    kinds = [m["type"] for m in msgs]
    assert "error" not in kinds, msgs
    frames = [P.parse_audio_frame(b) for b in binary]
    assert [f[0] for f in frames] == list(range(10))  # 2 s = 10 micro-turns, each with its window of audio
    assert [f[1] for f in frames] == [round((t + 1) * DELTA * 1000) for t in range(10)]
    assert all(len(f[3]) == 2 * WINDOW for f in frames)
    assert kinds.count("text.delta") >= 1 and all(m["text"] for m in msgs if m["type"] == "text.delta")
    stats = [m for m in msgs if m["type"] == "stats"]
    assert stats and stats[-1]["steps"] == 10 and stats[-1]["step_ms"] > 0 and "overruns" in stats[-1]
    words = [m for m in msgs if m["type"] == "word"]
    assert words and all(w["end"] >= w["start"] >= DELTA for w in words)
    assert kinds[-1] == "session.ended"


def test_native_round_trip(model):
    with running(make_app(model)) as port:
        run(round_trip(port))


def test_served_through_warps_and_bad_warps_refused(model, capsys):
    """A server whose sessions are heard through two vocal tracts (serve --warps) answers as any does; a bad
    --warps stops `microturn serve` before it starts, saying why."""
    with running(create_app(model, sampling=Sampling(temperature=1.0, warps=(0.9, 1.1)), max_sessions=4)) as port:
        run(round_trip(port))
    from microturn.serve.app import main

    for bad in ("5", "0.9,loud"):
        with pytest.raises(SystemExit):
            main(["--warps", bad])
        assert "warps" in capsys.readouterr().err


async def resampled(port: int, rate: int) -> int:
    async with websockets.connect(url(port)) as ws:
        await start(ws, sample_rate=rate)
        a = pcm(1.0, rate)
        for i in range(0, len(a), 2 * rate // 10):
            await ws.send(a[i : i + 2 * rate // 10])
        await ws.send(json.dumps({"type": "session.end"}))
        _, binary, code = await recv_all(ws)
    assert code == 1000
    return len(binary)


def test_other_sample_rates_are_resampled(model):
    with running(make_app(model)) as port:
        # 1 s at 24 or 8 kHz -> 16 kHz after the resampler's lag in silence (37 or 115 ms): 6 windows, the last
        # filled with silence, the filter's tail flushed
        assert run(resampled(port, 24000)) == 6
        assert run(resampled(port, 8000)) == 6


async def bad_inputs(port: int) -> list[str]:
    codes = []
    async with websockets.connect(url(port), max_size=None) as ws:
        await recv_json(ws, "hello")

        async def expect(msg, code):
            await ws.send(msg)
            err = await recv_json(ws, "error")
            assert err["code"] == code and err["message"] and err["fatal"] is False, (code, err)
            codes.append(code)

        await expect(pcm(0.1), "not_started")
        await expect(json.dumps({"type": "session.start", "sample_rate": 44}), "bad_rate")
        await expect(json.dumps({"type": "session.start", "version": 2}), "bad_version")
        await start(ws, hello=False)
        await expect(json.dumps({"type": "session.start"}), "already_started")
        await expect("{not json", "bad_json")
        await expect("[1, 2]", "bad_json")
        await expect(json.dumps({"type": "dance"}), "unknown_type")
        await expect(json.dumps({"kind": "text"}), "bad_message")
        await expect(b"\x00\x01\x02", "bad_audio")  # odd byte count
        await expect(b"\x00" * (P.MAX_MESSAGE + 2), "too_large")
        await expect(json.dumps({"type": "text", "text": ""}), "bad_text")
        await expect(json.dumps({"type": "text", "text": "x" * (P.MAX_TEXT + 1)}), "bad_text")
        await expect(json.dumps({"type": "text", "text": "hi \ud800"}), "bad_text")  # a lone surrogate: no character
        await expect(json.dumps({"type": "frame", "jpeg": "%%%"}), "bad_base64")
        await expect(json.dumps({"type": "frame", "jpeg": base64.b64encode(b"GIF89a....").decode()}), "bad_frame")
        broken = jpeg()[:40]
        await expect(json.dumps({"type": "frame", "jpeg": base64.b64encode(broken).decode()}), "bad_frame")
        await ws.send(pcm(5.1))  # the session goes on; a whole utterance at once is taken (nothing was waiting)
        await ws.send(json.dumps({"type": "session.end"}))
        msgs, binary, code = await recv_all(ws)
    # 26 micro-turns: the last partial one filled with silence; no audio dropped, no text taken
    assert code == 1000 and len(binary) == 26, (code, len(binary), msgs)
    assert not [m for m in msgs if m.get("type") == "error"], msgs
    return codes


def test_bad_inputs_give_errors_and_the_server_goes_on(model):
    with running(make_app(model)) as port:
        codes = run(bad_inputs(port))
        assert len(codes) == 16
        run(resampled(port, 16000))  # a new client is served


async def refused(port: int, path="/v1/stream", query="", headers=None, origin=None) -> tuple[dict, int]:
    async with websockets.connect(url(port, path, query), additional_headers=headers, origin=origin) as ws:
        msgs, _, code = await recv_all(ws, timeout=5)
    err = [m for m in msgs if m["type"] == "error"]
    assert err, msgs
    return err[-1], code


async def hold(port: int, n: int, query: str = ""):
    """Open ``n`` started sessions; returns the sockets."""
    out = []
    for _ in range(n):
        ws = await websockets.connect(url(port, query=query))
        await start(ws)
        out.append(ws)
    return out


def test_session_limit_and_disconnect_frees_the_slot(model):
    app = make_app(model, max_sessions=2)
    hub = app.state.hub

    async def scenario():
        a, b = await hold(port, 2)
        err, code = await refused(port)
        assert (err["code"], err["fatal"], code) == ("busy", True, 1013)
        err, code = await refused(port, "/v1/realtime")
        assert (err["error"]["code"], code) == ("busy", 1013)
        a.transport.abort()  # an abrupt disconnect, no close handshake
        for _ in range(200):
            if len(hub.clients) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(hub.clients) == 1
        (c,) = await hold(port, 1)  # the freed slot is usable
        await b.close()
        await c.close()

    with running(app) as port:
        run(scenario())
    assert not hub.clients and not any(e.active() for e in hub.engines)


def test_engines_grow_with_demand(model):
    """One session runs in a 1-row engine; more sessions get engines of 2, 4, ... rows (up to ``batch``)."""
    app = create_app(model, max_sessions=6, batch=2)
    hub = app.state.hub

    async def scenario():
        sockets = await hold(port, 4)
        sizes = [e.capacity for e in hub.engines]
        for ws in sockets:
            await ws.close()
        return sizes

    with running(app) as port:
        assert [e.capacity for e in hub.engines] == [1]
        assert run(scenario()) == [1, 2, 2]


def test_sessions_opened_at_once_share_engines(model):
    """Sessions that start together open one at a time: each new engine is built once and its rows are used."""
    app = create_app(model, max_sessions=6, batch=2)
    hub = app.state.hub

    async def scenario():
        sockets = await asyncio.gather(*[hold(port, 1) for _ in range(4)])
        sizes = [e.capacity for e in hub.engines]
        for (ws,) in sockets:
            await ws.close()
        return sizes

    with running(app) as port:
        assert run(scenario()) == [1, 2, 2]


def test_audio_ahead_of_the_stepping_is_dropped(model):
    """A chunk of any size is taken while nothing waits; audio that arrives while more than ``max_ahead_s`` waits is
    dropped and counted, and taken again once the stepping has caught up. Text that is no Unicode is refused by the
    session itself, before a tick that steps other sessions too."""
    hub = Hub(model, Settings(max_ahead_s=2.0))
    hub.warm_up()
    client = Client(hub._open(Background(LocalTools())), sink=lambda outs: None, fail=lambda: None)
    x = np.zeros(16000, np.float32)
    assert hub.push_audio(client, np.tile(x, 5))  # 5 s at once
    assert not hub.push_audio(client, x[:1600]) and client.dropped == 1600
    while client.ahead_s() > 2.0:
        stepped, broken = hub._step([client])
        assert stepped == [client] and not broken
    assert hub.push_audio(client, x[:1600]) and client.received == 5 * 16000 + 1600
    with pytest.raises(ValueError, match="Unicode"):
        client.session.push_text("hi \ud800")


def test_camera_frames_are_shrunk_and_only_the_last_one_waits(model):
    """Frames are decoded and cut to the model's size in the decoding worker (not the stepping thread, not 12 MB a
    frame), and a frame queued right after another replaces it: a client that sends frames and no audio holds one."""
    hub = Hub(model, Settings())
    client = Client(hub._open(Background(LocalTools())), sink=lambda outs: None, fail=lambda: None)
    size = model.layout.video_size
    frames = [hub.camera_frame(jpeg(h, w)) for h, w in ((1536, 2048), (48, 64))]
    assert all(f.shape == (size, size, 3) and f.dtype == np.uint8 for f in frames)
    for _ in range(50):
        hub.push_frame(client, frames[0])
    hub.push_frame(client, frames[1])
    assert [k for k, _ in client.inputs] == ["frame"] and client.inputs[0][1] is frames[1]
    hub.push_audio(client, np.zeros(WINDOW, np.float32))
    hub.push_frame(client, frames[0])
    assert [k for k, _ in client.inputs] == ["frame", "audio", "frame"]
    stepped, broken = hub._step([client])
    assert stepped == [client] and not broken and not client.inputs
    with pytest.raises(P.ProtocolError):
        hub.camera_frame(b"not a jpeg")


def test_typed_text_waits_at_most_max_text_wait_s(model):
    """Typed text enters the model two tokens a micro-turn: a client may send one long text, but not queue more
    behind it without limit; once the audio clock has taken most of it in, text is taken again."""
    hub = Hub(model, Settings(max_text_wait_s=2.0, max_ahead_s=1000.0))
    client = Client(hub._open(Background(LocalTools())), sink=lambda outs: None, fail=lambda: None)
    hub.push_text(client, "one two three " * 100)  # about 300 tokens, 30 s: taken, since nothing waits before it
    with pytest.raises(P.ProtocolError) as e:
        hub.push_text(client, "b")  # it would wait those 30 s
    assert e.value.code == "text_backlog" and [k for k, _ in client.inputs] == ["text"]
    turns = client.text_until - round(2.0 / model.layout.delta)  # the audio that brings the wait down to 2 s
    hub.push_audio(client, np.zeros(turns * WINDOW, np.float32))
    hub.push_text(client, "b")
    assert [k for k, _ in client.inputs] == ["text", "audio", "text"]


def test_no_engine_is_built_beyond_max_sessions(model):
    """A session asked for while every row is taken (a client admitted as another's row was being freed) is refused
    as busy, never given an engine beyond ``max_sessions``; a detached client's row counts as taken until closed."""
    hub = Hub(model, Settings(max_sessions=2))
    clients = [Client(hub._open(Background(LocalTools())), sink=lambda outs: None, fail=lambda: None)
               for _ in range(2)]
    with pytest.raises(Busy):
        hub._open(Background(LocalTools()))
    assert sum(e.capacity for e in hub.engines) == 2

    async def scenario():
        for c in clients:
            hub.clients[id(c.session)] = c
        closing = asyncio.create_task(hub.detach(clients[0]))
        await asyncio.sleep(0)  # detached: no longer a client, its session not closed yet
        assert id(clients[0].session) not in hub.clients and hub.full()
        await closing
        assert not hub.full() and clients[0].session.closed

    run(scenario())


def test_token(model):
    app = make_app(model, token="s3cret")

    async def scenario():
        ws = await websockets.connect(url(port))
        hello = await recv_json(ws, "hello")
        assert hello["auth_required"] is True
        await ws.send(json.dumps({"type": "session.start", "token": "wrong"}))
        msgs, _, code = await recv_all(ws)
        assert msgs[-1]["code"] == "unauthorized" and code == 1008
        await (await hold(port, 1, "?token=s3cret"))[0].close()
        async with websockets.connect(url(port), additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert (await recv_json(ws, "hello"))["auth_required"] is False
        async with websockets.connect(url(port)) as ws:
            await start(ws, token="s3cret")
        err, code = await refused(port, "/v1/realtime")
        assert (err["error"]["code"], code) == ("unauthorized", 1008)

    with running(app) as port:
        run(scenario())


def test_origin(model):
    assert origin_allowed(None, "h:1", None)
    assert origin_allowed("http://localhost:5173", "example.org", None)
    assert origin_allowed("https://example.org", "example.org", None)
    assert not origin_allowed("https://evil.example", "example.org", None)
    assert origin_allowed("https://app.example", "x", ["https://app.example"])
    assert not origin_allowed("http://localhost", "x", ["https://app.example"])

    async def scenario():
        err, code = await refused(port, origin="http://evil.example")
        assert (err["code"], code) == ("forbidden_origin", 1008)
        async with websockets.connect(url(port), origin=f"http://127.0.0.1:{port}") as ws:
            await start(ws)

    with running(make_app(model)) as port:
        run(scenario())


def test_a_loopback_server_admits_only_loopback_host_names(model):
    """Against DNS rebinding: a page at evil.example whose name is re-pointed at 127.0.0.1 sends Host and Origin
    evil.example, which agree; a server on loopback (``serve``'s default) refuses any Host that is not loopback."""
    assert host_allowed("evil.example:8000", None) and host_allowed("evil.example:8000", ["*"])
    for local in ("127.0.0.1:8000", "127.0.0.2", "[::1]:80", "localhost", "localhost.:8000"):
        assert host_allowed(local, []), local
    assert not host_allowed("evil.example:8000", []) and not host_allowed(None, []) and not host_allowed("[bad", [])
    assert host_allowed("app.example.org:443", ["App.Example.org"])  # behind a proxy that passes the client's Host

    async def scenario():
        evil = f"evil.example:{port}"  # the socket goes to 127.0.0.1, the request names evil.example
        sock = socket.create_connection(("127.0.0.1", port))
        async with websockets.connect(f"ws://{evil}/v1/stream", sock=sock, origin=f"http://{evil}") as ws:
            msgs, _, code = await recv_all(ws, timeout=5)
        assert (msgs[-1]["code"], code) == ("forbidden_host", 1008)
        async with websockets.connect(url(port), origin=f"http://127.0.0.1:{port}") as ws:
            await start(ws)

    with running(make_app(model, allowed_hosts=[])) as port:
        run(scenario())


def test_idle_timeout(model):
    async def scenario():
        async with websockets.connect(url(port)) as ws:
            await start(ws)
            msgs, _, code = await recv_all(ws, timeout=10)
        assert msgs[-1]["code"] == "idle_timeout" and code == 1001

    app = make_app(model, idle_timeout=0.5)
    with running(app) as port:
        run(scenario())
    assert not app.state.hub.clients


def test_engine_failure_closes_sessions_not_the_server(model):
    app = make_app(model)
    hub = app.state.hub

    def broken():
        raise RuntimeError("boom")

    async def failing_tick():
        async with websockets.connect(url(port)) as ws:
            await start(ws)
            engine = hub.engines[0]
            tick, engine.tick = engine.tick, broken
            await ws.send(pcm(0.4))
            msgs, _, code = await recv_all(ws)
            engine.tick = tick
        assert msgs[-1]["code"] == "internal_error" and code == 1011

    def health():
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())

    with running(app) as port:
        run(failing_tick())
        assert health()["ok"] is False and health()["failures"] == 1  # the last tick failed
        run(resampled(port, 16000))  # the server goes on: a new session is stepped, and it is healthy again
        assert health() == {**health(), "ok": True, "failures": 1, "sessions": 0}


def test_a_failing_background_factory_does_not_refuse_sessions(model):
    def factory():
        raise ConnectionError("no background model today")

    with running(make_app(model, background_factory=factory)) as port:
        run(resampled(port, 16000))


def test_page_and_health(model):
    with running(make_app(model)) as port:
        r = urllib.request.urlopen(f"http://127.0.0.1:{port}/")
        assert "microturn" in r.read().decode() and "default-src 'self'" in r.headers["Content-Security-Policy"]
        for f in ("app.js", "worklet.js"):
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{f}").status == 200
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
        assert health["ok"] and health["max_sessions"] == 4 and health["protocol_version"] == P.VERSION


# ---------------------------------------------------------------- the OpenAI-compatible endpoint
async def openai_session(port: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="tok")
    seen: dict[str, list] = {}
    async with client.realtime.connect(model="microturn") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Say bingo when I say tiger.",
                                           "audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "tiger"}]})
        await conn.response.create()
        audio = pcm(1.0, 24000)
        for i in range(0, len(audio), 4800):  # 100 ms chunks
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + 4800]).decode())
        await conn.input_audio_buffer.commit()
        await conn.send({"type": "input_audio_buffer.append", "audio": "%%%"})
        async with asyncio.timeout(20):
            async for ev in conn:
                seen.setdefault(ev.type, []).append(ev)
                if len(seen.get("response.output_audio.delta", [])) == 3:
                    await conn.response.cancel()
                if "response.done" in seen:
                    break
    return seen


def test_openai_realtime_client(model):
    with running(make_app(model, token="tok")) as port:
        seen = run(openai_session(port))
    assert seen["session.created"][0].session.audio.input.turn_detection is None
    updated = seen["session.updated"][0]
    assert "model decides" in updated.model_extra["note"] and updated.session.instructions.startswith("Say bingo")
    assert seen["conversation.item.added"][0].item.content[0].text == "tiger"
    assert "input_audio_buffer.committed" in seen
    assert seen["error"][0].error.code == "bad_base64"
    created = seen["response.created"][0].response
    deltas = seen["response.output_audio.delta"]
    assert len(deltas) == 3 and all(d.response_id == created.id for d in deltas)
    assert all(len(base64.b64decode(d.delta)) % 2 == 0 and len(base64.b64decode(d.delta)) > 0 for d in deltas)
    assert "response.output_audio_transcript.delta" in seen
    assert seen["response.done"][0].response.status == "cancelled"


async def beta_names(port: int) -> set[str]:
    async with websockets.connect(url(port, "/v1/realtime"), additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        audio = pcm(0.6, 24000)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}))
        types = set()
        while "response.audio.delta" not in types:
            types.add(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
    return types


def test_realtime_response_audio_ends_with_its_last_word(model):
    """The 16 -> 24 kHz resampler holds back the end of each chunk (16 ms here): a response's audio ends with what
    the first silent micro-turn brings out of it, not without it."""
    from types import SimpleNamespace

    from microturn.runtime.session import TurnOutput
    from microturn.serve.realtime import RealtimeConnection

    rt = RealtimeConnection(SimpleNamespace(headers={}, query_params={}), Hub(model, Settings()))
    sent = []
    rt.event = lambda kind, **fields: sent.append((kind, fields))
    x = (0.3 * np.sin(np.arange(2 * WINDOW) / 3)).astype(np.float32)
    rt.deliver([TurnOutput(t, [], [], "", [], [], [], a, 0.0)
                for t, a in enumerate((x[:WINDOW], x[WINDOW:], np.zeros(WINDOW, np.float32)))])
    assert sent[-1][0] == "response.done"
    pcm24 = b"".join(base64.b64decode(f["delta"]) for k, f in sent if k == "response.output_audio.delta")
    assert 2 * WINDOW * 3 // 2 <= len(pcm24) // 2 <= 2 * WINDOW * 3 // 2 + 480  # all 0.4 s, at most 20 ms more


@pytest.mark.parametrize("rate", [8000, 24000, 44100, 48000])
def test_resampled_input_fills_each_window_when_it_ends(rate):
    """Started with the resampler's lag in silence, a client's audio at another rate always gives the server at least
    as much 16 kHz audio as it has sent, whatever the chunks: a micro-turn is stepped once its window has come, not a
    chunk later."""
    for chunk in (rate // 50, rate // 5, 1234):
        r, sent, got = Resampler(rate, lead=True), 0, 0
        x = np.random.default_rng(1).standard_normal(3 * rate).astype(np.float32)
        for i in range(0, len(x), chunk):
            got += len(r(x[i : i + chunk]))
            sent = min(i + chunk, len(x))
            assert got >= sent * 16000 // rate, (chunk, i)
        assert got + len(r.flush()) == round(len(x) * 16000 / rate) + resampler_lag(rate, 16000)  # all heard
    assert len(Resampler(16000, lead=True)(np.ones(7, np.float32))) == 7  # no resampling, no lag


def test_realtime_beta_names(model):
    with running(make_app(model)) as port:
        types = run(beta_names(port))
    assert "response.output_audio.delta" not in types and "response.created" in types


async def realtime_bad_events(port: int) -> list[tuple[str, str | None]]:
    codes = []
    async with websockets.connect(url(port, "/v1/realtime"), max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        for msg in [b"\x00\x01", "{oops", json.dumps({"type": "dance", "event_id": "evt_c1"}),
                    json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}),
                    json.dumps({"type": "session.update", "session": []}),
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
                    json.dumps({"type": "conversation.item.create", "item": {"type": "message", "content": [
                        {"type": "input_audio", "audio": ""}]}}),
                    "x" * (P.MAX_MESSAGE + 1),
                    json.dumps({"type": "response.cancel", "event_id": "evt_c2"})]:  # no response to cancel
            await ws.send(msg)
            while (d := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "error":
                pass
            codes.append((d["error"]["code"], d["error"]["event_id"]))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "input_audio_buffer.cleared":
            pass
    return codes


def test_realtime_bad_events_give_errors(model):
    with running(make_app(model)) as port:
        codes = run(realtime_bad_events(port))
    assert [c for c, _ in codes] == ["bad_message", "bad_json", "unknown_event", "unsupported_format", "bad_message",
                                     "bad_audio", "unsupported_item", "too_large", "response_cancel_not_active"]
    # an error names the client event it answers, when that event had an id (as OpenAI's server does)
    assert [e for _, e in codes] == [None, None, "evt_c1", None, None, None, None, None, "evt_c2"]


# ---------------------------------------------------------------- the parser never raises anything else
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["session.start", "text", "frame", "session.end", "x"]) | st.text(max_size=10)},
    optional={"sample_rate": json_values, "token": json_values, "version": json_values, "text": json_values,
              "jpeg": json_values | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64), json_values.map(json.dumps), messages.map(json.dumps)))
def test_parse_never_raises_anything_but_protocol_error(data):
    try:
        msg = P.parse(data)
    except P.ProtocolError as e:
        assert e.code and e.message
    else:
        assert isinstance(msg, (P.AudioIn, P.SessionStart, P.TextIn, P.FrameIn, P.SessionEnd))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=300).map(lambda b: b"\xff\xd8\xff" + b))
def test_jpeg_decoding_never_raises_anything_but_protocol_error(data):
    try:
        rgb = P.decode_jpeg(data)
    except P.ProtocolError as e:
        assert e.code == "bad_frame"
    else:
        assert rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.mark.parametrize("data", ["[" * 100_000, '{"type": "session.start", "sample_rate": ' + "9" * 5000 + "}",
                                  '{"type": "session.start", "sample_rate": 1e400}', '{"type": "text", "text": NaN}',
                                  '{"type": "frame", "jpeg": "' + "A" * 100 + '"}', "\ud800", b"", "x" * (2 << 20)])
def test_parse_edge_cases(data):
    try:
        P.parse(data)
    except P.ProtocolError:
        pass


def test_a_frame_of_null_turns_the_camera_off(model):
    assert P.parse('{"type": "frame", "jpeg": null}') == P.FrameIn(None)
    with pytest.raises(P.ProtocolError):
        P.parse('{"type": "frame"}')
    hub = Hub(model, Settings())
    client = Client(hub._open(Background(LocalTools())), sink=lambda outs: None, fail=lambda: None)
    hub.push_frame(client, hub.camera_frame(jpeg()))
    hub.push_audio(client, np.zeros(WINDOW, np.float32))
    hub.push_frame(client, None)
    hub.push_audio(client, np.zeros(WINDOW, np.float32))
    hub._step([client])
    assert client.session.shown is not None  # micro-turn 0 saw the frame
    hub._step([client])
    assert client.session.shown is None  # micro-turn 1: the camera is off


def test_audio_frame_round_trip():
    b = P.audio_frame(7, 1600, b"\x01\x00" * 5, True)
    assert P.parse_audio_frame(b) == (7, 1600, True, b"\x01\x00" * 5)
    with pytest.raises(P.ProtocolError):
        P.parse_audio_frame(b"XXXX" + b[4:])


def test_event_messages_carry_their_kind():
    """Events (delegation, background answers) have a field named ``kind`` beside the message ``type``."""
    assert json.loads(P.encode("event", kind="answer", t=3, text="42")) == {"type": "event", "kind": "answer",
                                                                            "t": 3, "text": "42"}
