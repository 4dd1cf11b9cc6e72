"""The browser page end to end in headless Chromium, with a fake microphone playing a WAV file
(``--use-file-for-fake-audio-capture``), driven through the Chrome DevTools protocol over ``websockets``.

- ``test_page_streams_through_the_server``: the page's plumbing (AudioWorklet capture at 16 kHz, the WebSocket,
  playback scheduling, stats, transcript) against a tiny random model. Needs Chromium only.
- ``test_stop_then_start_at_once_keeps_the_new_session``: Start waits for the stopped session to close, so its late
  events cannot reach (and stop) the next one.
- ``test_page_gets_the_answer``: a trained model hears "What colour is a monkey?" from the fake microphone and
  the page's transcript shows its answer "brown" right after the question. Needs Chromium and a trained checkpoint
  (the bundled one or ``MICROTURN_CHECKPOINT``).

Slow (Chromium starts in seconds, the speech plays in real time): run with ``pytest -m slow tests/test_browser.py``.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
import websockets

from microturn.codecs.audio import load_wav, save_wav
from microturn.model.model import Sampling
from microturn.serve.app import create_app, server_config
from microturn.serve.protocol import decode_jpeg

torch.set_num_threads(1)
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")]


def trained_checkpoint() -> Path | None:
    from microturn.model.checkpoint import DEFAULT_CHECKPOINT

    path = Path(os.environ.get("MICROTURN_CHECKPOINT", DEFAULT_CHECKPOINT))
    return path if (path / "model.safetensors").exists() else None


@contextmanager
def running(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, port=sock.getsockname()[1]))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def speech_wav(folder: Path, parts: list[tuple[str, float]]) -> tuple[Path, list[tuple[float, float]]]:
    """espeak-ng utterances (or nothing, for ""), each followed by its pause in seconds, as one 16-bit 48 kHz WAV;
    also each utterance's (start, end) in seconds."""
    audio, spans, t = [], [], 0.0
    for i, (text, pause) in enumerate(parts):
        speech = np.zeros(0, np.float32)
        if text:
            f = folder / f"part{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(f), text], check=True,
                           capture_output=True)
            speech = load_wav(f, 48000)
        spans.append((t, t + len(speech) / 48000))
        t += len(speech) / 48000 + pause
        audio += [speech, np.zeros(int(pause * 48000), np.float32)]
    path = folder / "mic.wav"
    save_wav(path, np.concatenate(audio), 48000)
    return path, spans


@contextmanager
def chromium(url: str, wav: Path):
    """Headless Chromium on ``url`` with ``wav`` as the microphone; yields the DevTools port."""
    # Chromium's helper processes may still write to the profile as it exits: a leftover file must not fail the test
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={wav}",
                                 "--autoplay-policy=no-user-gesture-required", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start"
                time.sleep(0.1)
            yield int(port_file.read_text().split()[0])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class DevTools:
    """A minimal Chrome DevTools protocol client: call methods, collect exceptions and console errors."""

    def __init__(self, ws):
        self.ws, self.n, self.problems = ws, 0, []

    @classmethod
    async def page(cls, port: int, url: str) -> "DevTools":
        for _ in range(100):
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
            page = next((t for t in targets if t["type"] == "page" and t["url"].startswith(url)), None)
            if page:
                break
            await asyncio.sleep(0.1)
        ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=None)
        dt = cls(ws)
        await dt.call("Runtime.enable")
        return dt

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("method") == "Runtime.exceptionThrown":
                self.problems.append(m["params"]["exceptionDetails"].get("text"))
            elif m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error":
                self.problems.append(str(m["params"]["args"]))
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m.get("result")

    async def eval(self, js: str):
        r = await self.call("Runtime.evaluate", expression=js, returnByValue=True, userGesture=True,
                            awaitPromise=True)
        return r["result"].get("value")

    async def wait_for(self, js: str, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = await self.eval(js)
            if v:
                return v
            await asyncio.sleep(0.25)
        return await self.eval(js)


async def drive(port: int, url: str, until: str, timeout: float, camera: bool = False, answer: bool = False) -> dict:
    dt = await DevTools.page(port, url)
    loaded = await dt.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete' && "
                               "!!document.getElementById('start')", 15)
    assert loaded, "the page did not load"
    if camera:
        await dt.eval("document.getElementById('camera').checked = true")
    await dt.eval("document.getElementById('start').click()")
    ok = await dt.wait_for(until, timeout)
    page = await dt.eval("({transcript: document.getElementById('transcript').innerText,"
                         " status: document.getElementById('status').textContent,"
                         " step: document.getElementById('step').textContent,"
                         " buffer: document.getElementById('buffer').textContent,"
                         " latency: document.getElementById('latency-median').textContent})")
    if answer:
        page["answer"] = await dt.eval("window.answer || null")
    await dt.eval("document.getElementById('stop').click()")
    await dt.ws.close()
    return {"ok": ok, "problems": dt.problems, **page}


def test_page_streams_through_the_server(tmp_path):
    from microturn.model.config import ModelConfig
    from microturn.model.model import InteractionModel
    from microturn.stream.tokenizer import default_tokenizer

    model = InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32))
    app = create_app(model, max_sessions=2, sampling=Sampling(temperature=1.0))
    hub, jpegs, frames = app.state.hub, [], []
    camera_frame, push_frame = hub.camera_frame, hub.push_frame
    hub.camera_frame = lambda jpeg: (jpegs.append(decode_jpeg(jpeg).shape), camera_frame(jpeg))[1]
    hub.push_frame = lambda client, rgb: (frames.append(rgb.shape), push_frame(client, rgb))
    wav, _ = speech_wav(tmp_path, [("Hello, can you hear me?", 1.0)])
    with running(app) as port:
        url = f"http://127.0.0.1:{port}/"
        with chromium(url, wav) as cdp:
            # the agent's words reach the transcript, its audio is scheduled, stats arrive, camera frames flow
            res = asyncio.run(drive(cdp, url, "document.getElementById('transcript').innerText.length > 20 && "
                                              "document.getElementById('step').textContent.includes('ms')", 30,
                                    camera=True))
    assert res["ok"], res
    assert res["problems"] == [], res["problems"]
    assert res["transcript"].startswith("agent:") and "ms" in res["buffer"]
    assert hub.ticks >= 5  # the worklet's 16 kHz audio arrived and was stepped
    assert jpegs and jpegs[0] == (120, 160, 3)  # the page's camera JPEGs (its 160 x 120 canvas) were decoded
    side = hub.layout.video_size
    assert frames and set(frames) == {(side, side, 3)}  # and cut to the model's size before they were queued


@pytest.mark.skipif(trained_checkpoint() is None, reason="needs a trained checkpoint (the bundled model or "
                                                         "MICROTURN_CHECKPOINT) to check the answer")
def test_page_gets_the_answer(tmp_path):
    """"What colour is a monkey?" through the microphone: the model's answer "brown" reaches the transcript, and the
    page's word timing puts it right after the question (the model takes the turn by itself: no VAD)."""
    from microturn.model import checkpoint

    app = create_app(checkpoint.load(trained_checkpoint()), max_sessions=2, model_name="trained")
    wav, spans = speech_wav(tmp_path, [("", 1.0), ("What colour is a monkey?", 4.0)])
    found = ("(() => { const w = state.words.find(w => /brown/i.test(w.w)); if (w) window.answer = w;"
             " return !!window.answer && /brown/i.test(document.getElementById('transcript').innerText); })()")
    with running(app) as port:
        url = f"http://127.0.0.1:{port}/"
        with chromium(url, wav) as cdp:
            res = asyncio.run(drive(cdp, url, found, 25, answer=True))
    assert res["ok"], res
    assert res["problems"] == [], res["problems"]
    _, question_end = spans[1]
    assert question_end - 0.5 < res["answer"]["start"] < question_end + 1.5, (res["answer"], spans[1])


def test_stop_then_start_at_once_keeps_the_new_session(tmp_path):
    """Stop, then Start clicked at once: the old session still ends on the server (its late words and its close
    must not reach the new one), so Start waits for that close; the new session then streams, its microphone on."""
    from microturn.model.config import ModelConfig
    from microturn.model.model import InteractionModel
    from microturn.stream.tokenizer import default_tokenizer

    model = InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32))
    app = create_app(model, max_sessions=2)
    hub = app.state.hub
    wav, _ = speech_wav(tmp_path, [("Hello, can you hear me? I am still talking to you.", 8.0)])
    listening = "document.getElementById('status').textContent === 'listening' && state.mic !== null"

    async def drive_twice(port: int, url: str) -> dict:
        dt = await DevTools.page(port, url)
        assert await dt.wait_for("document.readyState === 'complete' && !!document.getElementById('start')", 15)
        await dt.eval("document.getElementById('start').click()")
        assert await dt.wait_for(f"{listening} && state.sent > 16000", 20), "the first session did not stream"
        first = await dt.eval("(window.old = state.ws, document.getElementById('stop').click(),"
                              " document.getElementById('start').click(),"  # at once: ignored until the close
                              " {start: document.getElementById('start').disabled, same: state.ws === window.old})")
        assert await dt.wait_for("!document.getElementById('start').disabled", 20), "the old session never closed"
        await dt.eval("document.getElementById('start').click()")
        assert await dt.wait_for(f"{listening} && state.sent > 8000", 20), "the second session did not stream"
        await asyncio.sleep(1.5)  # the old socket's late events, were they heard, would have stopped the media
        second = await dt.eval(f"({{on: {listening}, sent: state.sent}})")
        problems = dt.problems
        await dt.eval("document.getElementById('stop').click()")
        await dt.ws.close()
        return {"first": first, "second": second, "problems": problems}

    with running(app) as port:
        url = f"http://127.0.0.1:{port}/"
        with chromium(url, wav) as cdp:
            res = asyncio.run(drive_twice(cdp, url))
            sessions = len(hub.clients)
    assert res["first"] == {"start": True, "same": True}, res  # no new session while the old socket lived
    assert res["second"]["on"] and res["second"]["sent"] > 16000 * 1.5, res
    assert res["problems"] == [], res["problems"]
    assert sessions == 1  # the old session was closed on the server; only the new one was running
