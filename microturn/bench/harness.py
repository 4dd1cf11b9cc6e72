"""The harness baseline: how real-time voice agents work today (VAD -> endpointing -> turn-based responder -> TTS).

    agent = HarnessAgent(preset="pipecat", responder="oracle", latency=0.5)
    out = agent.run(scenario)

What it does, step by step:

1. **VAD.** Silero VAD (the ``silero-vad`` package, weights in the wheel) runs streaming over the user's audio in
   512-sample windows at 16 kHz (32 ms), giving one speech probability per window. The harness hears the user
   track only (perfect echo cancellation: the agent never hears itself).
2. **Speech segments** (``segments``): speech starts once ``start_secs`` of consecutive windows reach
   ``threshold`` (onset = the first of them; detected at the end of the last) and ends after ``stop_secs`` of
   windows below it. Durations are rounded up to whole 32 ms windows.
3. **Turn ends** (``turns``): the turn is complete once the VAD has closed the segment and ``turn_wait`` seconds
   have passed since its last speech (``max(closed, end + turn_wait)``: LiveKit's endpointing delay counts from the
   last detected speech, so it overlaps the VAD's own silence); a new segment detected before that continues the
   same turn. A typed message is a complete turn at its arrival.
4. **Barge-in**: a segment interrupts the agent once it has lasted ``interrupt_secs`` (at its detection when that
   is shorter than ``start_secs``): a word under way stops there (its audio cut; it counts as said only when at
   least ``CUT_WORD_SAID`` of it was), later words and pending replies are dropped. A segment that does not
   interrupt while the agent speaks is ignored (a backchannel, cough or echo).
5. **Reply**: after each turn end the responder picks what to say; the first word starts ``latency`` seconds after
   the turn end (LLM first token + TTS first audio; default 0.5 s) and words follow at ``rate`` words per second
   (default 2.5). A reply never starts while the previous one is still being spoken (typed turns queue).

Presets (``PRESETS``), after the public defaults (``shared/reference.md``):

- ``pipecat``: confidence 0.7, start 0.2 s, stop 0.2 s, then Smart Turn. We have no Smart Turn model; this preset
  assumes it says "complete" at every VAD stop (``turn_wait`` 0): Pipecat at its quickest (and least patient).
- ``pipecat-fallback``: the same VAD, Smart Turn never says "complete": the turn ends after 3 s of silence
  (``turn_wait`` 3 s), Pipecat's fallback: patient but slow. The truth lies between the two.
  Both: any detected user speech start interrupts the bot.
- ``livekit``: activation 0.5, min speech 0.05 s, min silence 0.55 s, endpointing delay 0.5 s (``turn_wait``;
  without the end-of-utterance model, which could stretch it to 3 s), interruption after 0.5 s of user speech.
- ``openai``: server_vad, threshold 0.5, silence 500 ms; prefix padding 300 ms only changes what audio the turn
  holds. Speech start (one window over the threshold) interrupts the response at once.

Responders (``responder=``):

- ``oracle``: the harness at its best: it knows what to say from the scenario's rules, but it can speak only at
  turn ends. At a turn end it says the text of every ``say`` rule whose window contains the planned start of its
  reply and that what it has said so far does not satisfy yet, in window order (a reply cut by a barge-in is owed
  again; two translations due at one turn end are both said); in a
  scenario with a ``background`` it says it ``delay`` seconds later (a tool call made at the turn end). Else, with
  a ``count`` rule, the target number; else "okay" in instruction families and a ``reply_words``-word answer in
  conversation families (default 1: a short answer, "Fourteen." to "What is four plus ten?", which neither runs
  into the user's next question nor takes the turn after a "Stop."). A reply is made long enough to talk through
  the ``continue`` and ``no_gap`` windows ahead (it knows how much there is to say, not when to say it). It knows
  no times or cues, and not whether to speak: it replies to every turn end, pauses and speech not meant for it
  included.
- ``model``: microturn's model used turn by turn: a fresh session hears the turn's audio (from ``prefix_secs``
  before its onset to the turn end; a typed turn as text), then silence for up to ``max_reply_secs``; the words
  it says in that silence are the reply, re-timed by the harness. Only its content is used, none of its timing.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..codecs.audio import SAMPLE_RATE
from ..stream.scenario import INSTRUCTION_FAMILIES, Scenario
from ..stream.words import Word
from .agents import Agent, AgentOutput, english_number, load_model, render_words
from .rules import EPS, check_say, normalize

WINDOW = 512  # Silero's window at 16 kHz
WINDOW_S = WINDOW / SAMPLE_RATE
GENERIC = ("okay", "here", "is", "what", "i", "think", "about", "that", "and", "so", "on")


# ----------------------------------------------------------------------------------------------- VAD
@functools.lru_cache(maxsize=1)
def silero():
    """The Silero VAD model (loaded once; its streaming state is reset per signal)."""
    from silero_vad import load_silero_vad

    return load_silero_vad()


def vad_probs(audio: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms window of 16 kHz audio, streaming (what ``VADIterator`` computes inside)."""
    import torch

    model = silero()
    model.reset_states()
    x = np.asarray(audio, np.float32)
    n = len(x) // WINDOW
    with torch.no_grad():
        return np.array([float(model(torch.from_numpy(x[k * WINDOW : (k + 1) * WINDOW].copy()), SAMPLE_RATE))
                         for k in range(n)], np.float32)


@dataclass(frozen=True)
class Segment:
    """One stretch of speech as a streaming VAD sees it (seconds)."""

    onset: float  # start of its first voiced window
    detected: float  # when the VAD declared the start
    end: float  # end of its last voiced window
    closed: float  # when the VAD declared the end (inf: still open when the audio ended)


def _windows(secs: float) -> int:
    return max(1, int(math.ceil(secs / WINDOW_S - 1e-9)))


def segments(probs: np.ndarray, threshold: float, start_secs: float, stop_secs: float) -> list[Segment]:
    """Speech segments from window probabilities: start after ``start_secs`` at or over the threshold, end after
    ``stop_secs`` under it."""
    need_on, need_off = _windows(start_secs), _windows(stop_secs)
    out, on, off, speaking, onset, detected, last = [], 0, 0, False, 0.0, 0.0, 0.0
    for k, p in enumerate(probs):
        t = (k + 1) * WINDOW_S
        if not speaking:
            on = on + 1 if p >= threshold else 0
            if on >= need_on:
                speaking, onset, detected, last, off = True, t - on * WINDOW_S, t, t, 0
        elif p >= threshold:
            last, off = t, 0
        else:
            off += 1
            if off >= need_off:
                out.append(Segment(round(onset, 4), round(detected, 4), round(last, 4), round(t, 4)))
                speaking, on = False, 0
    if speaking:
        out.append(Segment(round(onset, 4), round(detected, 4), round(last, 4), math.inf))
    return out


# ----------------------------------------------------------------------------------------------- endpointing
@dataclass(frozen=True)
class Endpointing:
    """A harness preset: VAD thresholds, endpointing and barge-in."""

    threshold: float
    start_secs: float
    stop_secs: float
    turn_wait: float  # silence after the last speech before the turn is complete (at the VAD's close at the earliest)
    interrupt_secs: float  # user speech needed to interrupt the agent
    prefix_secs: float = 0.0  # audio kept before the onset (what the turn holds)


PRESETS = {
    "pipecat": Endpointing(threshold=0.7, start_secs=0.2, stop_secs=0.2, turn_wait=0.0, interrupt_secs=0.0),
    "pipecat-fallback": Endpointing(threshold=0.7, start_secs=0.2, stop_secs=0.2, turn_wait=3.0, interrupt_secs=0.0),
    "livekit": Endpointing(threshold=0.5, start_secs=0.05, stop_secs=0.55, turn_wait=0.5, interrupt_secs=0.5),
    "openai": Endpointing(threshold=0.5, start_secs=0.0, stop_secs=0.5, turn_wait=0.0, interrupt_secs=0.0,
                          prefix_secs=0.3),
}


@dataclass
class Turn:
    """A user turn: its speech (or typed text) and when the harness considered it complete."""

    onset: float
    end: float  # end of speech (typed: arrival)
    complete: float  # the turn end the harness reacts to
    segments: list[Segment] = field(default_factory=list)
    text: str | None = None  # typed turns


def turns(segs: list[Segment], turn_wait: float) -> list[Turn]:
    """Voice turns: segments joined while each next one is detected before the previous turn end fires."""
    out: list[Turn] = []
    for s in segs:
        if out and out[-1].complete >= s.detected - EPS:
            t = out[-1]
            t.segments.append(s)
            t.end, t.complete = s.end, max(s.closed, s.end + turn_wait)
        else:
            out.append(Turn(s.onset, s.end, max(s.closed, s.end + turn_wait), [s]))
    return [t for t in out if math.isfinite(t.complete)]


def barge_in_time(s: Segment, p: Endpointing) -> float | None:
    """When segment s interrupts the agent, or None if it is too short to."""
    at = max(s.detected, s.onset + p.interrupt_secs)
    return at if s.end >= at - EPS or p.interrupt_secs <= p.start_secs else None


# ----------------------------------------------------------------------------------------------- responders
class OracleResponder:
    """The right reply from the scenario's rules (see the module docstring); knows no times, only turn ends."""

    def __init__(self, scenario: Scenario, reply_words: int = 1):
        self.scenario, self.reply_words = scenario, reply_words

    def reply(self, start: float, said: list[Word]) -> tuple[list[str], float]:
        """(words to say, extra delay before saying them) for a reply planned to start at ``start``, given what
        the agent has said (or still plans to say) so far."""
        sc = self.scenario
        delay = sc.background.delay if sc.background is not None else 0.0
        due = sorted((r for r in sc.expect if r.kind == "say" and not check_say(r, said).passed
                      and r.window[0] - EPS <= start + delay <= r.window[1] + EPS), key=lambda r: r.window)
        if due:  # every reply owed now (two translations due at one turn end, say), in the order they fall due
            return [w for r in due for w in normalize(r.alternatives[0])], delay
        counts = [r for r in sc.expect if r.kind == "count"]
        if counts:
            return english_number(counts[0].target), 0.0
        if sc.family in INSTRUCTION_FAMILIES:
            return ["okay"], 0.0
        return list(GENERIC[: self.reply_words]), 0.0

    def talk_until(self, start: float) -> float:
        """The end of the continue/no_gap windows ahead: how long the right reply goes on."""
        ends = [r.window[1] for r in self.scenario.expect if r.kind in ("continue", "no_gap") and r.window[0] >= start]
        return min(max(ends), start + 30.0) if ends else start


class ModelResponder:
    """microturn's model as a turn-based responder: a fresh session per turn (see the module docstring)."""

    def __init__(self, model, max_reply_secs: float = 4.0):
        from ..runtime.session import Engine

        self.engine = Engine(model, capacity=1, generate_audio=False)
        self.max_reply_secs = max_reply_secs

    def reply_for(self, audio: np.ndarray, turn: Turn, prefix: float) -> list[str]:
        L, s = self.engine.layout, self.engine.open()
        try:
            if turn.text is not None:
                s.push_text(turn.text, "typed")
                clip = np.zeros(0, np.float32)
            else:
                a, b = int(max(0.0, turn.onset - prefix) * SAMPLE_RATE), int(turn.complete * SAMPLE_RATE)
                clip = audio[a:b]
            n_in = int(math.ceil(len(clip) / L.samples))
            x = np.zeros((n_in + int(math.ceil(self.max_reply_secs / L.delta))) * L.samples, np.float32)
            x[: len(clip)] = clip
            for t in range(len(x) // L.samples):
                s.push_audio(x[t * L.samples : (t + 1) * L.samples])
                self.engine.tick()
            heard = n_in * L.delta
            return [w.w for w in s.finish() if w.start >= heard - EPS and normalize(w.w)]
        finally:
            self.engine.close(s)


# ----------------------------------------------------------------------------------------------- the agent
class HarnessAgent(Agent):
    """VAD + endpointing + a turn-based responder (see the module docstring for exactly what it does)."""

    def __init__(self, preset: str = "pipecat", responder: str = "oracle", latency: float = 0.5, rate: float = 2.5,
                 reply_words: int = 1, model=None, checkpoint: str | None = None, max_reply_secs: float = 4.0,
                 **overrides):
        if preset not in PRESETS:
            raise ValueError(f"unknown harness preset {preset!r}; known: {', '.join(PRESETS)}")
        if responder not in ("oracle", "model"):
            raise ValueError(f"unknown responder {responder!r}; known: oracle, model")
        unknown = set(overrides) - set(Endpointing.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown harness options: {', '.join(sorted(unknown))}")
        self.preset = Endpointing(**(PRESETS[preset].__dict__ | overrides))
        self.latency, self.rate, self.reply_words = latency, rate, reply_words
        self.responder = responder
        self.name = f"harness-{preset}-{responder}"
        self.model_responder = None
        if responder == "model":
            model, self.checkpoint = (model, checkpoint) if model is not None else load_model(checkpoint)
            self.model_responder = ModelResponder(model, max_reply_secs)

    def run(self, scenario: Scenario) -> AgentOutput:
        audio = scenario.load_audio(SAMPLE_RATE)
        segs = segments(vad_probs(audio), self.preset.threshold, self.preset.start_secs, self.preset.stop_secs)
        voice = turns(segs, self.preset.turn_wait)
        typed = [Turn(e.t, e.t, e.t, text=e.text) for e in scenario.text if e.t < scenario.duration]
        oracle = OracleResponder(scenario, self.reply_words)
        words, events = self._converse(scenario, audio, segs, voice + typed, oracle)
        words = [w for w in words if w.start < scenario.duration]
        return AgentOutput(words, render_words(words, scenario.duration), events,
                           {"segments": len(segs), "turns": len(voice) + len(typed)})

    def _converse(self, scenario, audio, segs, all_turns, oracle) -> tuple[list[Word], list[dict]]:
        """Walk the turn ends and barge-ins in time order, planning and cutting the agent's speech."""
        timeline = [(t.complete, 1, "turn_end", t) for t in all_turns]
        for s in segs:
            at = barge_in_time(s, self.preset)
            if at is not None and at < scenario.duration:
                timeline.append((at, 0, "barge_in", s))
        words: list[Word] = []
        events: list[dict] = []
        for at, _, kind, item in sorted(timeline, key=lambda x: (x[0], x[1])):
            if at >= scenario.duration:
                break
            speaking = bool(words) and words[-1].end > at + EPS
            if kind == "barge_in":
                if speaking:
                    words = _cut(words, at)
                    events.append({"t": round(at, 4), "kind": "barge_in"})
                continue
            turn: Turn = item
            if turn.text is None and _speaking_at(words, turn.onset) and not self._interrupts(turn):
                continue  # speech over the agent too short to interrupt it: ignored (a backchannel, a cough)
            start = at + self.latency
            if words:
                start = max(start, words[-1].end + 0.2)
            reply, extra = self._reply(audio, turn, start, words, oracle)
            events.append({"t": round(at, 4), "kind": "turn_end", "typed": turn.text is not None})
            if reply:
                words += self._speak(reply, start + extra, oracle)
        return words, events

    def _interrupts(self, turn: Turn) -> bool:
        return any(barge_in_time(s, self.preset) is not None for s in turn.segments)

    def _reply(self, audio, turn, start, words, oracle) -> tuple[list[str], float]:
        if self.model_responder is not None:
            return self.model_responder.reply_for(audio, turn, self.preset.prefix_secs), 0.0
        return oracle.reply(start, words)

    def _speak(self, reply: list[str], start: float, oracle: OracleResponder) -> list[Word]:
        """The reply as timed words at ``rate`` words per second, stretched with talk to the oracle's length."""
        step = 1.0 / self.rate
        if self.model_responder is None:
            n = int(math.ceil((oracle.talk_until(start) - start - 0.8 * step) / step)) + 1
            reply = reply + [GENERIC[(i % (len(GENERIC) - 1)) + 1] for i in range(max(0, n - len(reply)))]
        return [Word(w, round(start + i * step, 4), round(start + i * step + 0.8 * step, 4), "agent")
                for i, w in enumerate(reply)]


CUT_WORD_SAID = 0.6  # a word cut by a barge-in counts as said when at least this share of it was


def _cut(words: list[Word], at: float) -> list[Word]:
    """The agent stops at ``at``: a word under way ends there (kept only when ``CUT_WORD_SAID`` of it was said: a
    word cut after its first sound was not said), later words are dropped."""
    out = []
    for w in words:
        if w.end <= at:
            out.append(w)
        elif w.start < at - EPS and at - w.start >= CUT_WORD_SAID * (w.end - w.start):
            out.append(Word(w.w, w.start, round(at, 4), w.speaker))
    return out


def _speaking_at(words: list[Word], t: float) -> bool:
    """Whether the agent is talking at t (inside a word or a pause of under 0.5 s after one)."""
    return any(w.start - EPS <= t <= w.end + 0.5 for w in words)
