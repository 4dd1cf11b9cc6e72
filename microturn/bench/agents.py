"""Agents under test: each turns one scenario into an output track on the scenario's clock.

    out = OracleAgent().run(scenario)        # AgentOutput(words, audio, events, stats)
    outs = ModelAgent(model).run_many(scenarios)

- ``OracleAgent``: a perfect agent built from the rules and the duration alone (works on any set).
- ``SilentAgent``: says nothing.
- ``ModelAgent``: microturn's model through the runtime ``Engine``, micro-turn by micro-turn, many scenarios in
  one batch; simulated clock (as fast as it computes) or real-time clock (fed at wall-clock pace).
- ``HarnessAgent`` (``harness.py``): Silero VAD + endpointing + a turn-based responder, as voice agents do today.
- ``RemoteAgent`` (``remote.py``): a model behind ``microturn serve``, over its WebSocket protocol (native or
  OpenAI-Realtime), paced fast or at real time, several scenarios at once.

The agent's audio is 16 kHz float32 of exactly the session length. The oracle and the harness render their words
with ``microturn.data.speech.synthesize(word, AGENT_VOICE)`` when that module is importable, else with a
vowel-like tone burst per word (``SPEECH_BACKEND`` says which); each word's audio is fitted to its time slot.
"""
from __future__ import annotations

import functools
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..codecs.audio import SAMPLE_RATE
from ..stream.scenario import Rule, Scenario
from ..stream.tokenizer import EOT, PAD, default_tokenizer
from ..stream.words import Word
from .rules import EPS, normalize

try:  # the speech engines module is optional: without it the agents' audio is tone bursts
    from ..data.speech import AGENT_VOICE, synthesize as _synthesize

    SPEECH_BACKEND = "speech"
except Exception as _e:  # noqa: BLE001 (a missing or half-written module must not break the bench)
    AGENT_VOICE, _synthesize = None, None
    SPEECH_BACKEND = f"tone ({type(_e).__name__}: {_e})"


@dataclass
class AgentOutput:
    """What an agent produced for one scenario: its words and audio on the scenario's clock.

    ``events``: dicts with at least ``t`` and ``kind`` (delegations, background answers, the harness's turn ends and
    barge-ins). ``stats``: per-agent figures (e.g. the model's compute per step). ``trace``: the model's out tokens
    of every micro-turn that wrote more than ``<eot>``, silent notes and timers included: [micro-turn, text].
    """

    words: list[Word]
    audio: np.ndarray
    events: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)


class Agent:
    """Turns one scenario into an ``AgentOutput``. ``checkpoint`` names the model behind it (None: no model)."""

    name = "agent"
    checkpoint: str | None = None

    def run(self, scenario: Scenario) -> AgentOutput:
        raise NotImplementedError

    def run_many(self, scenarios: list[Scenario]) -> list[AgentOutput]:
        """All scenarios, in order (agents that batch override this)."""
        return [self.run(s) for s in scenarios]


def n_samples(duration: float, rate: int = SAMPLE_RATE) -> int:
    return int(round(duration * rate))


# ----------------------------------------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=4096)
def _word_audio(text: str) -> np.ndarray:
    """One word as audio at 16 kHz, trimmed to its voiced part (speech engine, or a tone burst)."""
    if _synthesize is not None:
        try:
            sp = _synthesize(text, AGENT_VOICE)
            audio = np.asarray(sp.audio, np.float32)
            if sp.words:
                a, b = int(sp.words[0].start * SAMPLE_RATE), int(math.ceil(sp.words[-1].end * SAMPLE_RATE))
                audio = audio[a:b] if b > a else audio
            if audio.size:
                return audio
        except Exception:  # noqa: BLE001 (a failing engine falls back to the tone for this word)
            pass
    return tone_burst(0.3)


def tone_burst(seconds: float, f0: float = 140.0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A vowel-like burst: a few harmonics of ``f0`` under a smooth envelope (Silero VAD hears it as voice)."""
    t = np.arange(max(1, int(seconds * rate))) / rate
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    env = np.sin(np.pi * np.linspace(0, 1, len(t))) ** 0.5
    return (0.25 * x * env / 1.6).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Stretch or squeeze audio to exactly n samples (linear interpolation: a crude time scale, fine for a VAD)."""
    if n <= 0:
        return np.zeros(0, np.float32)
    if len(x) == n:
        return x
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def render_words(words: list[Word], duration: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The agent's audio for its words: each word's audio fitted to [start, end], silence elsewhere."""
    out = np.zeros(n_samples(duration, rate), np.float32)
    for w in words:
        a = int(round(w.start * rate))
        b = min(len(out), int(round(w.end * rate)))
        if b - a < 16 or a >= len(out) or a < 0:  # a word before the session (or after it) has no audio in it
            continue
        out[a:b] += _fit(_word_audio(w.w), b - a)
    return np.clip(out, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------- silent
class SilentAgent(Agent):
    """Says nothing, ever: the floor every family that needs speech must beat."""

    name = "silent"

    def run(self, scenario: Scenario) -> AgentOutput:
        return AgentOutput([], np.zeros(n_samples(scenario.duration), np.float32))


# ----------------------------------------------------------------------------------------------- oracle
WORD_S = 0.3  # the oracle's word length
GAP_S = 0.05  # between its words in one chain
INSIDE_S = 0.05  # how far inside a window its first word starts
FILLER = ("well", "so", "and", "then")  # no_gap talk (no numbers: they would disturb count rules)


def english_number(n: int) -> list[str]:
    """A whole number in words the way the count rule parses it: 3293 -> three thousand two hundred ninety three."""
    from .rules import ONES, TENS

    if n < 0:
        return ["minus"] + english_number(-n)
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [ONES[n // 100], "hundred"] + (english_number(n % 100) if n % 100 else [])
    for scale, name in ((1_000_000, "million"), (1_000, "thousand")):
        if n >= scale:
            rest = english_number(n % scale) if n % scale else []
            return english_number(n // scale) + [name] + rest
    raise AssertionError(n)


class _Plan:
    """The oracle's words being placed: required chains go into free slots that break no constraint."""

    def __init__(self, scenario: Scenario):
        self.duration = scenario.duration
        self.words: list[Word] = []
        self.silent = [r.window for r in scenario.expect if r.kind == "silent"]
        self.stops = [(r.after, r.within) for r in scenario.expect if r.kind == "stop"]

    def starts_in(self, a: float, b: float) -> bool:
        return any(a - EPS <= w.start <= b + EPS for w in self.words)

    def _chain(self, texts: list[str], x: float, gap: float) -> list[Word]:
        return [Word(t, round(x + i * (WORD_S + gap), 4), round(x + i * (WORD_S + gap) + WORD_S, 4), "agent")
                for i, t in enumerate(texts)]

    def _fits(self, chain: list[Word]) -> bool:
        for w in chain:
            if w.start >= self.duration - EPS:
                return False
            if any(a - EPS <= w.start <= b + EPS for a, b in self.silent):
                return False
            if any(w.start < o.end + 0.01 and o.start < w.end + 0.01 for o in self.words):
                return False
        return True

    def place(self, texts: list[str], lo: float, hi: float, gap: float = GAP_S) -> bool:
        """Put the chain at the earliest start in [lo, hi] where it fits; False when there is none."""
        cands = {lo} | {o.end + GAP_S for o in self.words} | {b + 0.01 for _, b in self.silent}
        for x in sorted(c for c in cands if lo - EPS <= c <= hi + EPS):
            chain = self._chain(texts, max(0.0, x), gap)
            if self._fits(chain):
                self.words += chain
                return True
        return False

    def talk_through(self, a: float, b: float, gap: float) -> None:
        """no_gap: a chain of short words from just after a until b (both cut to the session), gaps under ``gap``."""
        a, b = max(a, 0.0), min(b, self.duration)
        step_gap = min(GAP_S, gap / 2)
        n = max(1, int(math.ceil((b - a - 0.01) / (WORD_S + step_gap))))
        chain = self._chain([FILLER[i % len(FILLER)] for i in range(n)], a + 0.01, step_gap)
        self.words += [w for w in chain if w.start < self.duration - EPS]

    def apply_stops(self) -> list[Word]:
        """Every word under way at a stop's t or starting in [t, t + s] ends by t + s."""
        out = []
        for w in sorted(self.words, key=lambda w: w.start):
            end = w.end
            for t, s in self.stops:
                if (w.start < t < w.end) or (t - EPS <= w.start <= t + s + EPS):
                    end = min(end, t + s)
            out.append(Word(w.w, w.start, max(w.start, round(end, 4)), "agent"))
        return out


def oracle_words(scenario: Scenario) -> list[Word]:
    """A perfect agent's words from the rules alone (see ``OracleAgent``)."""
    plan, rules = _Plan(scenario), scenario.expect
    for r in _kind(rules, "no_gap"):
        plan.talk_through(r.window[0], r.window[1], r.gap)
    for r in sorted(_kind(rules, "say"), key=lambda r: r.window):
        a, b = r.window
        plan.place(normalize(r.alternatives[0]), a + min(INSIDE_S, (b - a) / 2), b)
    for r in _kind(rules, "count"):
        _place_count(plan, r, rules, scenario.duration)
    for r in _kind(rules, "continue"):
        a, b = r.window
        if not plan.starts_in(a, b):
            plan.place(["yes"], a + min(INSIDE_S, (b - a) / 2), b)
    for r in _kind(rules, "respond"):
        t, s = r.after, r.within
        if not plan.starts_in(t, t + s):
            plan.place(["okay"], t + min(INSIDE_S, s / 2), t + s)
    return plan.apply_stops()


def _kind(rules: list[Rule], kind: str) -> list[Rule]:
    return [r for r in rules if r.kind == kind]


def _place_count(plan: _Plan, rule: Rule, rules: list[Rule], duration: float) -> None:
    """The target number, said at the last respond time if there is one (it answers "how many?"), else at the end."""
    words = english_number(rule.target)
    length = len(words) * (WORD_S + GAP_S)
    responds = _kind(rules, "respond")
    if responds:
        r = max(responds, key=lambda r: r.after)
        if plan.place(words, r.after + min(INSIDE_S, r.within / 2), r.after + r.within):
            return
    plan.place(words, max(0.0, duration - length - 2.0), max(0.0, duration - length))


class OracleAgent(Agent):
    """A perfect agent built from the rules alone: say -> the text's words from just inside the window; respond ->
    "okay" right after ``after`` unless a word already starts there; continue -> a word inside the window; no_gap ->
    a chain of short words covering the window; count -> the target number at the (last) respond time, else at the
    end. silent, stop and no_takeover are constraints it keeps: words are 0.3 s, never start in a silent window, and
    end by every stop deadline. Sets whose rules contradict each other can make it fail; that is a finding."""

    name = "oracle"

    def run(self, scenario: Scenario) -> AgentOutput:
        words = oracle_words(scenario)
        return AgentOutput(words, render_words(words, scenario.duration))


# ----------------------------------------------------------------------------------------------- model
DEFAULT_BACKGROUND_DELAY = 1.0  # seconds, for scenarios without a "background" field


@dataclass
class _Feed:
    """One scenario being fed to one session, micro-turn by micro-turn."""

    index: int
    scenario: Scenario
    session: object
    audio: np.ndarray
    video: tuple[np.ndarray, float] | None
    turns: int  # micro-turns to feed
    agent_audio: np.ndarray
    t: int = 0  # next micro-turn to push
    stepped: int = 0  # micro-turns the engine has stepped
    t0: float = 0.0  # wall clock at second 0 of the scenario (real-time clock)
    late_ms: list[float] = field(default_factory=list)
    trace: list = field(default_factory=list)  # [micro-turn, out tokens] (see AgentOutput)

    @property
    def done(self) -> bool:
        return self.stepped >= self.turns


class ModelAgent(Agent):
    """microturn's model through the runtime ``Engine``: per micro-turn t, the typed text that arrived in
    [tΔ, (t+1)Δ), the camera frame shown at tΔ (if the scenario has video), then the window's audio; one
    ``engine.tick()`` steps every session of the batch. Up to ``capacity`` scenarios run together; a session
    leaves when its scenario ends and the next scenario takes the slot. Background delegations go to
    ``Background(LocalTools(), delay=scenario.background.delay)`` (1 s when a scenario gives no delay).

    ``clock``: "simulated" (as fast as compute allows; the result does not depend on speed) or "realtime" (each
    window is fed once its audio would have arrived by the wall clock, so a slow step delays the next; words stay
    on the audio clock). Either way ``stats`` records compute per step and overruns (steps slower than Δ), and for
    the real-time clock how late each step finished after its window's audio had arrived (``late_ms``).
    """

    def __init__(self, model=None, checkpoint: str | None = None, capacity: int = 16, clock: str = "simulated",
                 temperature: float = 0.0, flow_temperature: float = 1.0, generate_audio: bool = True,
                 seed: int = 0, speak_threshold: float | None = None, warps: tuple[float, ...] | None = None):
        from ..model.model import Sampling

        if clock not in ("simulated", "realtime"):
            raise ValueError(f"clock must be 'simulated' or 'realtime', got {clock!r}")
        self.model, self.checkpoint = (model, checkpoint) if model is not None else load_model(checkpoint)
        self.capacity, self.clock, self.seed, self.generate_audio = capacity, clock, seed, generate_audio
        self.tok = default_tokenizer()
        self.sampling = Sampling.of(self.model, temperature=temperature, flow_temperature=flow_temperature,
                                    **({} if speak_threshold is None else {"speak_threshold": speak_threshold}),
                                    **({} if warps is None else {"warps": warps}))
        self.name = "model"

    def _engine(self, n: int):
        from ..runtime.session import Engine

        return Engine(self.model, capacity=max(1, min(self.capacity, n)), sampling=self.sampling,
                      generate_audio=self.generate_audio, simulated=self.clock == "simulated", seed=self.seed)

    def run(self, scenario: Scenario) -> AgentOutput:
        return self.run_many([scenario])[0]

    def run_many(self, scenarios: list[Scenario]) -> list[AgentOutput]:
        engine = self._engine(len(scenarios))
        queue, live = deque(enumerate(scenarios)), []
        results: list[AgentOutput | None] = [None] * len(scenarios)
        while queue or live:
            while queue and len(live) < engine.capacity:
                live.append(self._open(engine, *queue.popleft()))
            due = self._push_due(live)
            engine.tick()
            self._collect(live, due)
            for f in [f for f in live if f.done]:
                results[f.index] = self._close(engine, f)
                live.remove(f)
        return results

    # ---- one scenario's life ----
    def _open(self, engine, index: int, scenario: Scenario) -> _Feed:
        from ..runtime.background import Background, LocalTools

        delay = scenario.background.delay if scenario.background is not None else DEFAULT_BACKGROUND_DELAY
        session = engine.open(Background(LocalTools(), delay=delay))
        L = engine.layout
        turns = int(math.ceil(scenario.duration / L.delta - 1e-9))
        audio = np.zeros(turns * L.samples, np.float32)
        user = scenario.load_audio(SAMPLE_RATE)
        audio[: len(user)] = user
        return _Feed(index, scenario, session, audio, scenario.load_video(), turns,
                     np.zeros(n_samples(scenario.duration), np.float32), t0=time.perf_counter())

    def _push_due(self, live: list[_Feed]) -> dict[int, float]:
        """Push the next micro-turn of every feed (real-time clock: once its audio has arrived). Returns the wall
        time each pushed window became available."""
        if self.clock == "realtime":
            L = live[0].session.layout
            arrival = min((f.t0 + (f.t + 1) * L.delta for f in live if f.t < f.turns), default=0.0)
            time.sleep(max(0.0, arrival - time.perf_counter()))
        now, due = time.perf_counter(), {}
        for f in live:
            L = f.session.layout
            if f.t >= f.turns or (self.clock == "realtime" and f.t0 + (f.t + 1) * L.delta > now + 1e-4):
                continue
            _push_window(f, L)
            due[f.index] = f.t0 + f.t * L.delta
        return due

    def _collect(self, live: list[_Feed], due: dict[int, float]) -> None:
        now = time.perf_counter()
        for f in live:
            L = f.session.layout
            for out in f.session.drain():
                f.stepped += 1
                wrote = [x for x in out.tokens if x not in (EOT, PAD)]
                if wrote:
                    f.trace.append([out.t, self.tok.show(wrote)])
                if out.audio is not None:
                    a = (out.t + 1) * L.samples
                    n = max(0, min(len(out.audio), len(f.agent_audio) - a))
                    f.agent_audio[a : a + n] = out.audio[:n]
                if self.clock == "realtime" and f.index in due:
                    f.late_ms.append((now - due[f.index]) * 1000)

    def _close(self, engine, f: _Feed) -> AgentOutput:
        s = f.session
        words = s.finish()
        engine.close(s)
        events = [{"t": e.t, "kind": e.kind, "text": e.text} for e in s.events]
        events += [{"t": a.t, "kind": "answer", "text": a.text, "error": a.error} for a in s.answers]
        stats = {"steps": s.stats.steps, "overruns": s.stats.overruns, "clock": self.clock,
                 "step_ms": _spread(s.stats.step_ms)}
        if self.clock == "realtime":
            stats["late_ms"] = _spread(f.late_ms)
        words = [Word(w.w, w.start, w.end, "agent") for w in words]
        return AgentOutput(words, f.agent_audio, sorted(events, key=lambda e: e["t"]), stats, f.trace)


def _push_window(f: _Feed, L) -> None:
    """Micro-turn f.t's inputs: typed text of its window, then the camera frame shown at its start, then audio."""
    t, s, a, b = f.t, f.session, f.t * L.delta, (f.t + 1) * L.delta
    for e in f.scenario.text:
        if a - 1e-9 <= e.t < b - 1e-9 and e.text.strip():
            s.push_text(e.text, "typed")
    if f.video is not None:  # the frame the video shows at the window's start; after its last one, none
        frames, fps = f.video
        k = int(math.floor(a * fps + 1e-9))
        s.push_frame(frames[k] if 0 <= k < len(frames) else None)
    s.push_audio(f.audio[t * L.samples : (t + 1) * L.samples])
    f.t += 1


def _spread(values: list[float]) -> dict:
    """median, p90 and max of some milliseconds (None when there are none)."""
    if not values:
        return {"median": None, "p90": None, "max": None}
    return {"median": round(float(np.median(values)), 3), "p90": round(float(np.percentile(values, 90)), 3),
            "max": round(float(max(values)), 3)}


def load_model(checkpoint: str | None = None):
    """(model, checkpoint label): the bundled checkpoint when ``checkpoint`` is None or "bundled", else the file."""
    try:
        from ..model import checkpoint as ck
    except ImportError as e:
        raise RuntimeError(f"cannot load a model: microturn.model.checkpoint is not available ({e})") from e
    obj = ck.load_default() if checkpoint in (None, "bundled") else ck.load(checkpoint)
    model = obj[0] if isinstance(obj, tuple) else getattr(obj, "model", obj)
    return model, ("bundled" if checkpoint in (None, "bundled") else str(checkpoint))
