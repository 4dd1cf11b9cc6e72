"""Sessions on the audio clock, stepped together in batches by an ``Engine``.

A ``Session`` owns one conversation: its input buffers (audio -> dMel frames, typed text, camera frames), its row of
the batched streaming state, its output decoder and its background delegations. Time comes from the audio clock:
micro-turn t is ready once the audio up to (t + 1) * delta has arrived, however it was chunked. Typed text and
camera frames join the micro-turn whose window they arrived in (by the audio clock).

The ``Engine`` holds the model and the batched state; each ``tick`` steps every session that has a micro-turn
ready, as one batch (sessions may join and leave at any time; a row's state is only touched by its session). With
``Sampling.warps`` each session has a row per warp, hearing its audio through that vocal tract, and the model decides
once for all of them (``InteractionModel.step``'s ``tie``).

Threads: a session's ``push_*``, ``drain`` and ``finish`` and the engine's ``open`` and ``close`` may be called from
any thread while another ticks; ``open`` waits for a step in flight (it resets the batched state's row the step may
be writing). Input is checked when it is pushed (a ``ValueError``; a ``RuntimeError`` once the session is closed),
so a bad push never fails inside a ``tick`` that steps every session of the batch.
"""
from __future__ import annotations

import numbers
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from ..codecs import dmel
from ..codecs.audio import as_mono
from ..codecs.vocoder import get_vocoder
from ..model.model import InteractionModel, Sampling
from ..stream.layout import OutputDecoder, TextQueue, audio_tokens, video_frame, voiced_frames
from ..stream.timeline import Event
from ..stream.tokenizer import Tokenizer, check_text, default_tokenizer
from ..stream.words import Word
from .background import Answer, Background

# Frames of the previous window vocoded before each window: a frame's analysis window (1024 samples) spans about
# five 200-sample hops, so six frames give Griffin-Lim everything that overlaps the new window.
VOCODER_CONTEXT = 6


@dataclass
class TurnOutput:
    """What one micro-turn of a session produced."""

    t: int  # micro-turn index; its output covers [(t + 1) * delta, (t + 2) * delta)
    tokens: list[int]
    said: list[int]  # the tokens it said (no controls, delegation queries or notes)
    text: str  # their text (for live transcripts)
    words: list[Word]  # words that became final
    events: list[Event]  # delegations made
    answers: list[Answer]  # background answers that re-entered the stream
    audio: np.ndarray | None  # the agent's audio for the window, 16 kHz
    step_ms: float


@dataclass
class SessionStats:
    steps: int = 0
    overruns: int = 0  # steps whose compute exceeded the micro-turn budget
    # the latest steps' compute times: bounded (10 minutes), so an hour-long session's memory stays flat
    step_ms: deque[float] = field(default_factory=lambda: deque(maxlen=3000))


class Session:
    def __init__(self, engine: "Engine", slot: int, background: Background | None = None):
        L = engine.layout
        self.engine, self.slot, self.layout = engine, slot, L
        self.background = background or Background()
        self.dmel = dmel.DMelStream()
        self.frames: deque[np.ndarray] = deque()  # completed dMel frames not yet stepped
        self.samples = 0  # audio received so far (the clock)
        self.t = 0  # next micro-turn to step
        self.text = TextQueue(L, engine.tok)
        self.text_due: list[tuple[int, str, str]] = []  # (micro-turn, text, source) waiting for their micro-turn
        self.camera: dict[int, np.ndarray | None] = {}  # micro-turn -> the frame pushed in its window (None: off)
        self.shown: np.ndarray | None = None  # what the camera shows until another frame comes (None: off)
        self.decoder = OutputDecoder(L, engine.tok)
        self.outputs: deque[TurnOutput] = deque()
        self.words: list[Word] = []
        self.events: list[Event] = []
        self.answers: list[Answer] = []
        self.stats = SessionStats()
        self.closed = False
        self._prev_mel: np.ndarray | None = None  # the last frames of the previous window (vocoder context)

    # ---- input (any thread) ----
    @property
    def now(self) -> float:
        """The audio clock: seconds of input received."""
        return self.samples / dmel.SAMPLE_RATE

    def _turn_now(self) -> int:
        return max(self.t, self.samples // self.layout.samples)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"session {self.slot} is closed: open a new one")

    def push_audio(self, x) -> None:
        x = as_mono(x, allow_empty=True)
        with self.engine.lock:
            self._check_open()
            self.samples += len(x)
            f = self.dmel.push(x)
            self.frames.extend(f)

    def push_text(self, text: str, source: str = "typed") -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        check_text(text)  # refused here, not by the tokenizer inside a tick that steps other sessions too
        with self.engine.lock:
            self._check_open()
            self.text_due.append((self._turn_now(), text, source))

    def push_frame(self, frame) -> None:
        """The camera frame shown from now until the next one, as a video holds its frame: the last one pushed in a
        micro-turn's window is the one it sees, and a window with none sees the one before (a client's frames
        drift against its audio clock: some windows get two, some none). ``None``: the camera is off from now."""
        image, on = video_frame(frame, self.layout)  # checked here, outside the lock
        with self.engine.lock:
            self._check_open()
            self.camera[self._turn_now()] = image if on else None

    def ready(self) -> bool:
        return not self.closed and len(self.frames) >= self.layout.frames

    # ---- stepping (the engine's thread) ----
    def _inputs(self):
        L = self.layout
        bins = np.stack([self.frames.popleft() for _ in range(L.frames)])
        for item in [d for d in self.text_due if d[0] <= self.t]:
            self.text.push(item[1], item[2])
            self.text_due.remove(item)
        for k in sorted(k for k in self.camera if k <= self.t):
            self.shown = self.camera.pop(k)
        frame, on = self.shown, self.shown is not None
        if frame is None:
            frame = np.zeros((L.video_size, L.video_size, 3), np.uint8)
        return audio_tokens(bins, L), frame, on, self.text.take()

    def _finish(self, tokens: np.ndarray, mel: np.ndarray | None, audio: np.ndarray | None) -> TurnOutput:
        L = self.layout
        words, events = self.decoder.push(tokens, mel)
        t_out = (self.t + 1) * L.delta
        for e in events:  # a query is asked once complete, as a real background model gets it (not at its <dlg>)
            self.background.ask(e.text, t_out)
        answers = self.background.poll(t_out, wait=self.engine.simulated)
        for a in answers:
            if a.text:
                self.text_due.append((self.t + 1, a.text, "bg"))
        said = list(self.decoder.said)
        out = TurnOutput(self.t, [int(i) for i in tokens], said, self.engine.tok.decode(said), words, events, answers,
                         audio, 0.0)
        self.words += words
        self.events += events
        self.answers += answers
        self.t += 1
        return out

    def _record(self, out: TurnOutput, step_ms: float):
        out.step_ms = step_ms
        self.stats.steps += 1
        self.stats.step_ms.append(step_ms)
        if step_ms > self.layout.delta * 1000:
            self.stats.overruns += 1
        self.outputs.append(out)

    def finish(self) -> list[Word]:
        """End of input: the last open word becomes final. Returns all the session's words."""
        with self.engine.lock:
            self.words += self.decoder.flush()
            return list(self.words)

    def drain(self) -> list[TurnOutput]:
        """The outputs recorded since the last drain, oldest first (each exactly once, whatever thread ticks)."""
        out = []
        while self.outputs:
            out.append(self.outputs.popleft())  # atomic against a tick appending: none is lost between two calls
        return out

    def close(self):
        self.engine.close(self)


class Engine:
    """One model, a batch of ``capacity`` session slots, stepped together."""

    def __init__(self, model: InteractionModel, capacity: int = 32, sampling: Sampling | None = None,
                 generate_audio: bool = True, simulated: bool = True, tok: Tokenizer | None = None, seed: int = 0):
        self.model = model.eval()
        self.layout = model.layout
        self.tok = tok or default_tokenizer()
        dtypes = {p.dtype for p in model.parameters()}
        if dtypes != {torch.float32}:  # the cache, the clock and the flow noise are float32: say so, not a matmul's error
            raise ValueError(f"the engine steps a float32 model, got {', '.join(sorted(map(str, dtypes)))} weights: "
                             f"give it model.float()")
        if model.cfg.vocab_size != self.tok.vocab_size:
            raise ValueError(f"the model writes {model.cfg.vocab_size} token ids but the tokenizer has "
                             f"{self.tok.vocab_size}: it was trained for another vocabulary (carry a checkpoint "
                             f"over to this one with scripts/grow_vocab.py, then fine-tune it)")
        if not isinstance(capacity, numbers.Integral) or capacity < 1:
            raise ValueError(f"capacity must be a whole number of session slots, at least 1, got {capacity!r}")
        self.capacity, self.generate_audio, self.simulated = capacity, generate_audio, simulated
        self.sampling = sampling or Sampling.of(model)  # default: the checkpoint's own decoding settings
        self.warps = self.sampling.warps or (1.0,)  # the vocal tracts each session is heard through, a row each
        self.device = next(model.parameters()).device
        self.state = model.new_state(capacity * len(self.warps), device=self.device)
        self.sessions: list[Session | None] = [None] * capacity
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)  # notified when a step in flight ends
        self._stepping = False  # a model step is running outside the lock: the batched state is not ours
        self.seed = seed
        # one random stream per slot, reseeded when a session opens: a session's samples never depend on others
        self.generators = [torch.Generator(self.device) for _ in range(capacity)]
        self.vocoder = get_vocoder("griffinlim", iters=16) if generate_audio else None

    def open(self, background: Background | None = None) -> Session:
        """A new session in a free slot; ``RuntimeError`` when all ``capacity`` slots are in use."""
        with self.lock:
            while self._stepping:  # the step may still write the row a closed session left: reset it after
                self._idle.wait()
            try:
                slot = self.sessions.index(None)
            except ValueError:
                raise RuntimeError(f"all {self.capacity} session slots are in use") from None
            rows = torch.zeros(self.capacity, len(self.warps), dtype=torch.bool, device=self.device)
            rows[slot] = True
            self.state.reset(rows.flatten())
            self.generators[slot].manual_seed(self.seed)
            s = Session(self, slot, background)
            self.sessions[slot] = s
            return s

    def close(self, s: Session):
        """Free the session's slot (idempotent); its pending delegations are given up."""
        with self.lock:
            if self.sessions[s.slot] is s:
                self.sessions[s.slot] = None
            s.closed = True
            s.background.close()

    def active(self) -> list[Session]:
        return [s for s in self.sessions if s is not None]

    def tick(self) -> list[Session]:
        """Step every session with a micro-turn ready, as one batch. Returns the sessions stepped."""
        L = self.layout
        with self.lock:
            while self._stepping:  # one step at a time (another thread's tick)
                self._idle.wait()
            ready = [s for s in self.sessions if s is not None and s.ready()]
            if not ready:
                return []
            t0 = time.perf_counter()
            K = len(self.warps)  # rows per session: session s is rows s * K ... s * K + K - 1
            B = self.capacity * K
            audio = torch.zeros(B, L.n_audio, L.frames_per_token, dmel.N_MELS, dtype=torch.uint8)
            video = torch.zeros(B, L.video_size, L.video_size, 3, dtype=torch.uint8)
            video_on = torch.zeros(B, dtype=torch.bool)
            text_in = torch.zeros(B, L.n_text_in, dtype=torch.long)
            active = torch.zeros(B, dtype=torch.bool)
            for s in ready:
                a, f, on, txt = s._inputs()
                for r, w in enumerate(self.warps, s.slot * K):
                    audio[r] = torch.from_numpy(a if w == 1.0 else dmel.warp_channels(a, w))
                    video[r], video_on[r] = torch.from_numpy(f), on
                    text_in[r], active[r] = torch.from_numpy(txt), True
            # a session's draws come from its first row's generator
            generator = [self.generators[r // K] if a and r % K == 0 else None for r, a in enumerate(active.tolist())]
            self._stepping = True
        dev = self.device
        try:  # the step is over only once its sessions have advanced (_finish): another tick must not see them before
            res = self.model.step(self.state, audio.to(dev), video.to(dev), video_on.to(dev), text_in.to(dev),
                                  active=active.to(dev), sampling=self.sampling, generate_audio=self.generate_audio,
                                  generator=generator, tie=K)
            out = res.out[::K].cpu().numpy()  # back to a row per session
            mel = res.mel[::K].float().cpu().numpy() if res.mel is not None else None
            audio = self.vocode(mel, ready) if mel is not None else {}
            with self.lock:
                outputs = [s._finish(out[s.slot], None if mel is None else mel[s.slot], audio.get(s.slot))
                           for s in ready]
                ms = (time.perf_counter() - t0) * 1000  # the whole tick: inputs, model, decoding and vocoding
                for s, o in zip(ready, outputs):
                    s._record(o, ms)
        finally:
            with self.lock:
                self._stepping = False
                self._idle.notify_all()
        return ready

    def run_ready(self) -> int:
        """Tick until no session has a complete micro-turn left; returns the number of ticks."""
        n = 0
        while self.tick():
            n += 1
        return n

    def vocode(self, mel: np.ndarray, sessions: list[Session]) -> dict[int, np.ndarray]:
        """This window's agent mel of each session -> audio, all voiced windows in one batched call, each after the
        last ``VOCODER_CONTEXT`` frames of the session's previous window (the frames whose analysis windows overlap
        this one's). A silent window (no voiced frame) costs nothing: it is silence."""
        L = self.layout
        out, batch, slots = {}, [], []
        for s in sessions:
            m = mel[s.slot]
            ctx, s._prev_mel = s._prev_mel, m[-VOCODER_CONTEXT:]
            if not voiced_frames(m).any():
                out[s.slot] = np.zeros(L.samples, np.float32)
            else:
                ctx = np.full_like(m[:VOCODER_CONTEXT], dmel.LOG_MIN) if ctx is None else ctx
                batch.append(np.concatenate([ctx, m]))
                slots.append(s.slot)
        if batch:
            for slot, wav in zip(slots, self.vocoder(np.stack(batch))):
                out[slot] = wav[-L.samples :]
        return out
