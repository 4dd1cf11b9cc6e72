"""Runtime edge cases a user of the Python API meets: slots reused while a step is in flight, closed sessions, bad
input refused at the push, outputs drained from another thread, background replies that are not text, hanging and
failing endpoints, delegations given up when a session closes."""
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from microturn.model.config import ModelConfig
from microturn.model.model import InteractionModel
from microturn.runtime.background import Background, BackendError, OpenAIChat
from microturn.runtime.session import Engine, TurnOutput
from microturn.stream.tokenizer import default_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32)).eval()


def _window(eng):
    return np.zeros(eng.layout.samples, np.float32)


def test_a_slot_reopened_while_a_step_is_in_flight_starts_fresh(model, monkeypatch):
    """Another thread closes a session and opens a new one while the engine steps: the new session must not start
    with the state the step wrote for the old one (open waits for the step, then resets the row)."""
    eng = Engine(model, capacity=1, generate_audio=False)
    old = eng.open()
    old.push_audio(_window(eng))
    opened = []
    step = model.step

    def racing_step(*a, **k):
        def swap():
            old.close()
            opened.append(eng.open())

        th = threading.Thread(target=swap)
        th.start()
        th.join(0.3)  # with the fix open() is still waiting here: the step runs, then the row is reset
        racing_step.thread = th
        return step(*a, **k)

    monkeypatch.setattr(model, "step", racing_step)
    assert eng.tick() == [old]
    racing_step.thread.join(5)
    assert opened and opened[0].slot == 0 and eng.sessions[0] is opened[0]
    assert int(eng.state.t[0]) == 0 and int(eng.state.length[0]) == 0
    assert not bool((eng.state.cache.pos[0] >= 0).any())


def test_a_closed_session_refuses_input(model):
    eng = Engine(model, capacity=1, generate_audio=False)
    s = eng.open()
    s.push_audio(_window(eng))
    assert eng.tick() == [s]
    assert s.finish() == s.finish()  # finishing twice adds nothing
    s.close()
    s.close()  # idempotent
    for push in (lambda: s.push_audio(_window(eng)), lambda: s.push_text("hello"),
                 lambda: s.push_frame(np.zeros((8, 8, 3), np.uint8))):
        with pytest.raises(RuntimeError, match="closed"):
            push()
    assert len(s.drain()) == 1 and not s.frames
    again = eng.open()  # the slot is free again, and fresh
    assert again.slot == s.slot and again.t == 0 and int(eng.state.t[0]) == 0


def test_capacity_must_be_a_positive_whole_number(model):
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(ValueError, match="capacity"):
            Engine(model, capacity=bad, generate_audio=False)
    assert Engine(model, capacity=np.int64(2), generate_audio=False).capacity == 2


def test_bad_input_is_refused_at_the_push_and_the_batch_goes_on(model):
    eng = Engine(model, capacity=2, generate_audio=False)
    s, other = eng.open(), eng.open()
    for bad in (np.zeros((100, 2), np.float32), np.full(10, np.nan, np.float32), "abc", np.zeros(5, bool)):
        with pytest.raises(ValueError):
            s.push_audio(bad)
    for bad in (np.zeros((8, 8, 5), np.uint8), np.zeros((0, 8, 3), np.uint8), np.full((4, 4, 3), np.nan),
                np.zeros((1, 4, 4, 3), np.uint8)):
        with pytest.raises(ValueError):
            s.push_frame(bad)
    for bad in ("", "  ", "a \ud800 b", 5):
        with pytest.raises(ValueError):
            s.push_text(bad)
    for x in (s, other):
        x.push_audio(_window(eng))
    assert eng.tick() == [s, other]


def test_push_frame_none_is_no_frame(model, monkeypatch):
    """``push_frame(None)`` is the camera off, as offline encoding has it (``video_frame(None)``: not on); it also
    takes back a frame pushed earlier in the same window."""
    eng = Engine(model, capacity=1, generate_audio=False)
    assert eng.layout.video
    s = eng.open()
    seen = []
    step = model.step

    def spy(state, audio, video, video_on, *a, **k):
        seen.append(bool(video_on[0]))
        return step(state, audio, video, video_on, *a, **k)

    monkeypatch.setattr(model, "step", spy)
    s.push_frame(None)
    s.push_audio(_window(eng))
    s.push_frame(np.full((8, 8, 3), 200, np.uint8))
    s.push_audio(_window(eng))
    s.push_frame(np.full((8, 8, 3), 200, np.uint8))
    s.push_frame(None)
    s.push_audio(_window(eng))
    eng.run_ready()
    assert seen == [False, True, False]


def test_drain_loses_no_output_to_a_tick_in_another_thread(model):
    """A tick records outputs while another thread drains: every output is drained exactly once."""
    s = Engine(model, capacity=1, generate_audio=False).open()
    n = 100000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows within a few thousand

    def record():
        for i in range(n):
            s._record(TurnOutput(i, [], [], "", [], [], [], None, 0.0), 1.0)

    try:
        th = threading.Thread(target=record)
        th.start()
        got = []
        while th.is_alive():
            got += s.drain()
        th.join()
        got += s.drain()
    finally:
        sys.setswitchinterval(interval)
    assert [o.t for o in got] == list(range(n))


@pytest.mark.parametrize("reply", ["a \ud800 b", 56, None, {"text": "hi"}])
def test_a_backend_reply_that_is_not_text_is_an_error_not_a_broken_batch(model, reply):
    """The reply re-enters the stream through the tokenizer inside a tick that steps every session: a reply that is
    not valid text must come back as an error answer, and every session goes on."""
    eng = Engine(model, capacity=2, generate_audio=False)
    bad, other = eng.open(Background(lambda q: reply, delay=0.0)), eng.open()
    bad.background.ask("seven times eight", 0.0)
    for _ in range(4):
        for s in (bad, other):
            s.push_audio(_window(eng))
        eng.tick()
    assert bad.t == other.t == 4
    assert len(bad.answers) == 1 and bad.answers[0].text is None and "not" in bad.answers[0].error


class _Chat(BaseHTTPRequestHandler):
    replies = {
        "ok": (200, json.dumps({"choices": [{"message": {"content": " fifty six "}}]}).encode()),
        "parts": (200, json.dumps({"choices": [{"message": {"content": [
            {"type": "text", "text": "fifty "}, {"type": "text", "text": "six"}]}}]}).encode()),
        "null": (200, json.dumps({"choices": [{"message": {"content": None, "tool_calls": []}}]}).encode()),
        "surrogate": (200, b'{"choices": [{"message": {"content": "a \\ud800 b"}}]}'),
        "html": (200, b"<html>not json</html>"),
        "shape": (200, json.dumps({"choices": []}).encode()),
        "down": (503, b'{"error": "overloaded"}'),
        "slow": (200, json.dumps({"choices": [{"message": {"content": "late"}}]}).encode()),
    }

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        kind = self.path.split("/")[1]
        if kind == "slow":
            time.sleep(3.0)  # far longer than anything else here takes, however busy the machine
        code, body = self.replies[kind]
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (the slow reply)
            pass


@pytest.fixture(scope="module")
def endpoint():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_openai_chat_replies(endpoint):
    assert OpenAIChat(endpoint + "/ok", "m")("q") == "fifty six"
    assert OpenAIChat(endpoint + "/parts", "m")("q") == "fifty six"
    for kind, why in [("null", "no text content"), ("surrogate", "not valid Unicode"), ("html", "Expecting value"),
                      ("shape", "index"), ("down", "503")]:
        with pytest.raises(BackendError, match=why):
            OpenAIChat(endpoint + "/" + kind, "m")("q")
    with pytest.raises(BackendError, match="timed out"):
        OpenAIChat(endpoint + "/slow", "m", timeout=0.3)("q")


def test_a_slow_endpoint_never_blocks_real_time_stepping(model, endpoint):
    eng = Engine(model, capacity=1, generate_audio=False, simulated=False)
    s = eng.open(Background(OpenAIChat(endpoint + "/slow", "m", timeout=5.0)))
    s.background.ask("what is the time", 0.0)
    for _ in range(3):
        s.push_audio(_window(eng))
        eng.tick()
    assert s.t == 3 and not s.answers  # stepped on while the answer (3 s away) is on its way
    deadline = time.perf_counter() + 20
    while not s.answers and time.perf_counter() < deadline:
        time.sleep(0.05)
        s.push_audio(_window(eng))
        eng.tick()
    assert s.answers and s.answers[0].text == "late"


def test_simulated_time_waits_for_a_hanging_backend_once():
    """In simulated time a due backend is waited for, but only up to the time-out: the query is then given up at
    once, not waited for again at every tick until the session clock passes the time-out."""
    release = threading.Event()
    b = Background(lambda q: release.wait(10) and "late", delay=0.2, timeout=0.6)
    try:
        b.ask("q", 0.0)
        assert b.poll(0.0, wait=True) == []  # not due yet: no wait
        t0 = time.perf_counter()
        answers = b.poll(0.2, wait=True)
        waited = time.perf_counter() - t0
        assert 0.3 <= waited < 5 and len(answers) == 1 and "time-out" in answers[0].error  # (the backend: 10 s)
        assert not b.pending and b.poll(0.4, wait=True) == []
    finally:
        release.set()


def test_closing_a_session_gives_up_its_delegations(model):
    release, calls = threading.Event(), []

    def backend(q):
        calls.append(q)
        release.wait(10)
        return "done"

    pool = ThreadPoolExecutor(1)
    try:
        eng = Engine(model, capacity=1, generate_audio=False)
        s = eng.open(Background(backend, pool=pool))
        s.background.ask("first", 0.0)
        s.background.ask("second", 0.0)  # queued behind the first on the one worker
        futures = [p.future for p in s.background.pending]
        s.close()
        assert not s.background.pending and futures[1].cancelled()
        s.background.ask("third", 0.0)  # asked after the close (a tick in flight): never sent
        release.set()
        pool.shutdown(wait=True)
        assert calls == ["first"]
    finally:
        release.set()
        pool.shutdown(wait=False)
