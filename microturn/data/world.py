"""The synthetic interaction world: sessions of every family, rendered with real speech engines.

One generator per family writes a ``Session``: a ``Timeline`` (user audio and words, typed text, video, and the
agent's target words, audio and delegations) plus the format-v1 rules (``expect``) a good agent satisfies. Training
shards use the whole timeline; scenario sets keep only the user side and the rules.

Timing conventions of the targets (what the bundled model learns):
- the agent starts a reply at the first micro-turn boundary at least ``REACT`` seconds after the user's speech ends
  (or a typed text arrives): it must hear a little silence to know the turn is over; with ``late_replies``
  (training only) some replies start one or two micro-turns later, so that a model that let the first moment pass
  has seen that a reply is still owed (``Builder.reply_at``);
- a reaction to something heard or seen (a cue, a completed rep, "stop") starts at the first boundary after it,
  a cue's included: while the agent waits on a cue it notes each cue-list word it hears at that boundary
  (``<heard:pencil>``: ``heard`` events) and says the response right after, in the same micro-turn, if the word
  was the cue, so that telling the cue from the other cue words is a comparison of two tokens it wrote, the
  rehearsed ``<note> <heard:tiger>`` and the heard ``<heard:tiger>``, read by the very slot that acts (session 10's model,
  deciding straight from the audio, did not tell them apart; sessions 11-13's, acting a micro-turn after a
  two-token ``<heard> tiger``, did not read it); with ``heard_late`` (for a model that hears back) a micro-turn
  later, when the word its listening head heard is one of its inputs;
- the user talking over the agent stops it at the first boundary 0.1 s after the onset, before the word can be told
  (an interruption or a backchannel alike); after a backchannel, once heard, it goes on where it was cut; the answer
  to an interrupting question starts no earlier than ``STOP_WITHIN`` after the interruption's onset (the stop rule);
- agent speech starts on micro-turn boundaries, so its words decode to the times they were spoken;
- the words of an instruction that lasts (a time, a cue) are noted as the agent takes them in (written silently
  after ``<note>``: ``note`` events), then rehearsed in its free out slots while the instruction lasts
  (``rehearse``), and a time is counted down one micro-turn at a time (``timer`` events): the model carries what it
  was asked and when a few tokens back, instead of finding it 30 s back and measuring time when it acts. A countdown
  starts ``TIMER_LAG`` micro-turns after the moment it counts from (a spoken instruction's end or the act before: 1;
  a typed instruction's arrival: 4, time to read its number), so its first value is 5 T - 1 (spoken) or 5 T - 4
  (typed) for T seconds: a function of the number alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..codecs.audio import SAMPLE_RATE
from ..stream.layout import Layout
from ..stream.timeline import Event, TextEvent, Timeline
from ..stream.tokenizer import BG, TYPED, default_tokenizer
from ..stream.words import Word
from . import language as lang
from .speech import AGENT_VOICE, GENERATED_MAX, low_slt_voice, sample_voice, synthesize

REACT = 0.15  # seconds of silence after a user turn before the agent's reply may start
TIMER_LAG = {"voice": 1, "typed": 4}  # micro-turns from what a countdown counts from to its first value (session 8:
#   before, a countdown started once every note was written, so its first value also depended on how long the
#   instruction took to read or hear, some 60 values of which the model learned only some; these lags give the values
#   it had learned most often, 5 T - 1 by voice and 5 T - 4 typed)
DELTA = Layout().delta
STOP_WITHIN = 1.0  # seconds from an interruption's onset by which the agent's speech under way has ended (rule)
RESUME_GAP = 0.6  # seconds of silence at most when the agent pauses at a user's backchannel and goes on (rule: 0.8)


@dataclass
class Session:
    id: str
    family: str
    timeline: Timeline
    expect: list[dict]
    background_delay: float | None = None
    meta: dict = field(default_factory=dict)


def boundary(t: float, delta: float = DELTA) -> float:
    """The first micro-turn boundary at or after t."""
    return round(float(np.ceil(t / delta - 1e-6) * delta), 6)


class Builder:
    """Places user speech, typed text, agent speech, background events and video on one clock."""

    def __init__(self, rng: np.random.Generator, split: str, difficulty: float = 1.0, generated_voices: float = 0.0,
                 voice_rng: np.random.Generator | None = None, generated_accents: float = 0.0, drill: bool = False,
                 typed: float | None = None, note_questions: bool = False, heard_late: bool = False,
                 festival: float = 0.0, mbrola: float = 0.0, kokoro: float = 0.0, piper: float = 0.0,
                 late_replies: float = 0.0, late_rng: np.random.Generator | None = None, short_numbers: float = 0.0,
                 short_rng: np.random.Generator | None = None, low_slt: float = 0.0, more_talk: float = 0.0,
                 more_rng: np.random.Generator | None = None, more_words: float = 0.0,
                 words_rng: np.random.Generator | None = None, odd_words: float = 0.0,
                 odd_rng: np.random.Generator | None = None):
        self.rng, self.split, self.difficulty = rng, split, difficulty
        self.more_talk, self.more_rng = more_talk, more_rng  # training only (generate)
        self.more_words, self.words_rng = more_words, words_rng  # training only (generate)
        self.odd_words, self.odd_rng = odd_words, odd_rng  # training only (generate)
        self.late_replies, self.late_rng = late_replies, late_rng  # training only (generate)
        self.short_numbers, self.short_rng = short_numbers, short_rng  # training only (generate)
        self.drill = drill  # training only: a cue session with several times the cue-list words (generate(cue_drill))
        self.typed = typed  # training only: the chance an instruction is typed, in place of difficulty's (generate)
        self.note_questions = note_questions  # note a delegated question's words (generate)
        self.heard_late = heard_late  # a cue-list word is noted a micro-turn later, from hearing back (generate)
        self.voice = sample_voice(rng, split)
        if generated_voices and self.voice.engine == "espeak" and voice_rng.random() < generated_voices:
            n = int(voice_rng.integers(GENERATED_MAX))
            accent = generated_accents and voice_rng.random() < generated_accents
            self.voice = replace(self.voice, variant=f"~a{n}" if accent else f"~{n}")
        if festival or mbrola or kokoro or piper or low_slt:  # one draw for all, so a part with festival's voices
            u = voice_rng.random()                             # only keeps its sessions when the others' are added
            bounds = np.cumsum([festival, mbrola, kokoro, piper, low_slt])
            if u < bounds[-1]:
                engine = ("festival", "mbrola", "kokoro", "piper", "low_slt")[
                    int(np.searchsorted(bounds, u, side="right"))]
                self.voice = low_slt_voice(voice_rng) if engine == "low_slt" else sample_voice(voice_rng, split, engine)
        self.user = np.zeros(0, np.float32)
        self.agent_audio = np.zeros(0, np.float32)
        self.words: list[Word] = []
        self.text: list[TextEvent] = []
        self.events: list[Event] = []
        self.video, self.fps = None, 5.0
        self.input: str | None = None  # how the first instruction came: "typed" or "voice"
        self.instruction: tuple[str, float, bool] | None = None  # the last one: (text, time, typed)
        self.marks: list[float] = []  # times worth marking in pictures (the reps completing)
        self.gain = float(rng.uniform(0.5, 1.0)) if difficulty > 0.3 else 0.8

    @staticmethod
    def _mix(track: np.ndarray, audio: np.ndarray, t: float, gain: float = 1.0) -> np.ndarray:
        i = int(round(t * SAMPLE_RATE))
        if len(track) < i + len(audio):
            track = np.concatenate([track, np.zeros(i + len(audio) - len(track), np.float32)])
        track[i : i + len(audio)] += gain * audio
        return track

    def say(self, text: str, t: float, speaker: str = "user", voice=None,
            gain: float | None = None) -> tuple[float, float]:
        """User (or another speaker) says ``text`` starting at t; returns (first word start, last word end)."""
        sp = synthesize(text, voice or self.voice)
        g = self.gain if gain is None else gain
        self.user = self._mix(self.user, sp.audio, t, g)
        ws = [Word(w.w, round(w.start + t, 4), round(w.end + t, 4), speaker) for w in sp.words]
        self.words += ws
        return ws[0].start, ws[-1].end

    def type(self, text: str, t: float) -> float:
        self.text.append(TextEvent(round(t, 4), text, "typed"))
        return t

    def instruct(self, text: str, t: float, typed: bool) -> float:
        """An instruction by voice or typed; returns E, the time the instruction counts from."""
        self.input = self.input or ("typed" if typed else "voice")
        self.instruction = (text, t, typed)
        return self.type(text, t) if typed else self.say(text, t)[1]

    @staticmethod
    def _read_by(j: int, t: float) -> float:
        """The boundary by which token j of a text that arrived at t, after its ``<typed>`` or ``<bg>``, has reached a
        text_in slot (the queue, empty before, hands out ``n_text_in`` tokens per micro-turn from the one it arrived
        in)."""
        L = Layout()
        return round((np.floor(t / L.delta + 1e-6) + j // L.n_text_in + 1) * L.delta, 6)

    def perceived(self, word: str, nth: int = 0) -> float:
        """When the agent has taken in ``word`` (its ``nth`` occurrence) of the last instruction (a micro-turn
        boundary): typed, once its token has reached a text_in slot; by voice, once the word has been heard to its
        end."""
        text, t, typed = self.instruction
        tok = default_tokenizer()
        if typed:
            ids = [TYPED] + tok.encode(" " + text.strip())
            at = [j for j, x in enumerate(ids) if x == tok.encode_word(word)[0]]
            if len(at) <= nth:
                raise ValueError(f"{word!r} is not {nth + 1} times among the tokens of the instruction {text!r}")
            return self._read_by(at[nth], t)
        ends = [w.end for w in self.words if w.start >= t - 1e-6 and w.w.lower().strip(".,!?") == word]
        if len(ends) <= nth:
            raise ValueError(f"{word!r} is not {nth + 1} times among the words heard of the instruction {text!r}")
        return boundary(ends[nth] + 0.05)

    def taken_in(self, words: list[str]) -> list[float]:
        """When each of ``words`` of the last instruction, in order, is taken in (``perceived``; a word said twice
        is the second occurrence the second time)."""
        return [self.perceived(w, words[:i].count(w)) for i, w in enumerate(words)]

    def remember(self, words: list[str], e: float) -> float:
        """Note each of ``words`` of the last instruction (which ended at e) as it is taken in; returns when the
        agent has the whole instruction and its notes are written (by voice, a little silence after it; typed, once
        its last token is read): from then on it rehearses them (``rehearse``)."""
        text, at, typed = self.instruction
        times = self.taken_in(words)
        for w, t in zip(words, times):
            self.events.append(Event(t, "note", w))
        whole = self._read_by(len(default_tokenizer().encode(" " + text.strip())), at) if typed else boundary(e + REACT)
        return max(whole, max(times) + DELTA)

    def hold(self, answer: str, arrives: float, said: float) -> None:
        """The background model's ``answer`` arrives at ``arrives`` and the agent says it from the boundary ``said``.
        When there is time to note its words before then (one per micro-turn, each once it is read), the agent notes
        them and recites them until it says them, as it rehearses an instruction's words but with each round opened by
        ``<bg>`` (``recite``); otherwise it says them straight from what it has just read. Session 16's model
        rehearsed held answers without a marker and said most of them out of order: in a loop of "two eight four two"
        the word after "two" is "eight" or, round the loop, "two", and where the answer starts is nowhere written.
        Sessions 21-23 had the agent recite on to the next round start and say the answer there; no run on that layout
        learned it, and this one is the layout the bundled model was trained on (docs/training.md, "Session 24")."""
        tok, words = default_tokenizer(), answer.split()
        ids, j, times = [BG] + tok.encode(" " + answer.strip()), 0, []
        for w in words:
            j = ids.index(tok.encode_word(w)[0], j + 1)
            times.append(round(float(max(self._read_by(j, arrives), times[-1] + DELTA if times else 0.0)), 6))
        if times[-1] > said - DELTA + 1e-6:
            return
        for w, t in zip(words, times):
            self.events.append(Event(t, "note", w))
        if times[-1] + DELTA < said - 1e-6:
            self.rehearse(words, round(times[-1] + DELTA, 6), said, kind="recite")

    def rehearse(self, words: list[str], t: float, until: float | None = None, kind: str = "rehearse") -> None:
        """From t until ``until`` (the session's end when None), the agent's free out slots repeat its notes (a
        ``recite`` event: each round opened by ``<bg>``)."""
        self.events.append(Event(t, kind, " ".join(words) + ("" if until is None else f"; {until:.4f}")))

    def countdown(self, start: float, due: float, end: float | None = None) -> None:
        """A timer from ``start`` to the agent's act at ``due`` (called off at ``end``)."""
        self.events.append(Event(start, "timer", f"{due:.4f}" + ("" if end is None else f" {end:.4f}")))

    def reply_at(self, t: float) -> float:
        """When the agent's reply to a user's turn starts, given the first time it may (``t``): the first boundary
        from t, or with chance ``late_replies`` one or two micro-turns after it (from a stream of its own)."""
        if self.late_replies and self.late_rng.random() < self.late_replies:
            return round(boundary(t) + DELTA * int(self.late_rng.integers(1, 3)), 6)
        return boundary(t)

    def agent(self, text: str, t: float) -> tuple[float, float]:
        """The agent says ``text`` from the first boundary at or after t; returns (start, end)."""
        sp = synthesize(text, AGENT_VOICE)
        t0 = boundary(t) - sp.words[0].start  # first word onset exactly on the boundary
        self.agent_audio = self._mix(self.agent_audio, sp.audio, max(0.0, t0))
        ws = [Word(w.w.lower(), round(w.start + t0, 4), round(w.end + t0, 4), "agent") for w in sp.words]
        self.words += ws
        return ws[0].start, ws[-1].end

    def cut_agent(self, t: float, fade: float = 0.02) -> None:
        """The agent stops talking at t: its audio fades out, words under way end at t, later ones are dropped."""
        i, n = int(round(t * SAMPLE_RATE)), int(fade * SAMPLE_RATE)
        if i < len(self.agent_audio):
            self.agent_audio[i : i + n] *= np.linspace(1, 0, len(self.agent_audio[i : i + n]), dtype=np.float32)
            self.agent_audio[i + n :] = 0
        self.words = [w if w.speaker != "agent" or w.end <= t else Word(w.w, w.start, round(t + fade, 4), "agent")
                      for w in self.words if w.speaker != "agent" or w.start < t]

    def sentence(self) -> str:
        """An ordinary sentence (``language.filler_sentence``), with chance ``more_talk`` one of the larger training
        grammar's instead and with chance ``more_words`` one of the wide grammar's (over the larger one), and then with
        chance ``odd_words`` with some of its words made up (``language.oddify``), each drawn from a stream of its own
        after the usual one is drawn, so the draws that follow stay those made without the options."""
        text = lang.filler_sentence(self.rng, self.split)
        if self.more_talk and self.more_rng.random() < self.more_talk:
            text = lang.filler_sentence(self.more_rng, self.split, "more")
        if self.more_words and self.words_rng.random() < self.more_words:
            text = lang.filler_sentence(self.words_rng, self.split, "wide")
        if self.odd_words and self.odd_rng.random() < self.odd_words:
            text = lang.oddify(self.odd_rng, text)
        return text

    def filler(self, t: float, n: int = 1, gap=(0.3, 0.9)) -> float:
        """The user says n ordinary sentences from t; returns the end of the last."""
        end = t
        for _ in range(n):
            end = self.say(self.sentence(), t)[1]
            t = end + float(self.rng.uniform(*gap))
        return end

    def finish(self, duration: float, meta: dict | None = None) -> Timeline:
        n = int(round(duration * SAMPLE_RATE))
        user = np.zeros(n, np.float32)
        user[: min(n, len(self.user))] = self.user[:n]
        if self.difficulty > 0.2:  # background noise at a random SNR-like level
            level = float(self.rng.uniform(0.0005, 0.004 + 0.012 * self.difficulty))
            user += level * self.rng.standard_normal(n).astype(np.float32)
        agent = np.zeros(n, np.float32)
        agent[: min(n, len(self.agent_audio))] = self.agent_audio[:n]
        words = sorted((w for w in self.words if w.start < duration), key=lambda w: (w.start, w.speaker))
        return Timeline(duration=round(duration, 4), user_audio=np.clip(user, -1, 1), agent_audio=np.clip(agent, -1, 1),
                        video=self.video, fps=self.fps, words=words, text=sorted(self.text, key=lambda e: e.t),
                        events=sorted(self.events, key=lambda e: e.t),
                        meta={"voice": str(self.voice), "split": self.split, "difficulty": self.difficulty,
                              "input": self.input} | (meta or {}))


# ----------------------------------------------------------------------------------------------- rules
def say(text, a, b) -> dict:
    return {"kind": "say", "text": text, "window": [round(a, 3), round(b, 3)]}


def silent(a, b) -> dict:
    return {"kind": "silent", "window": [round(a, 3), round(b, 3)]}


def respond(t, within=1.5) -> dict:
    return {"kind": "respond", "after": round(t, 3), "within": within}


def silent_between(a: float, b: float, busy: list[tuple[float, float]]) -> list[dict]:
    """Silent rules covering [a, b] minus the busy windows."""
    rules, t = [], a
    for s, e in sorted(busy):
        if s > t + 0.05:
            rules.append(silent(t, min(s, b)))
        t = max(t, e)
    if b > t + 0.05:
        rules.append(silent(t, b))
    return [r for r in rules if r["window"][0] < r["window"][1]]


def _typed(b: Builder) -> bool:
    """Whether an instruction is typed: with chance 0.8 - 0.3 * difficulty, or ``b.typed`` when set (the same draw,
    so the rest of the session is the one drawn without it)."""
    return bool(b.rng.random() < (0.8 - 0.3 * b.difficulty if b.typed is None else b.typed))


def _maybe_ack(b: Builder, e: float) -> None:
    """A brief "okay" after an instruction, sometimes (allowed within 2 s); after a typed one once it is read.
    Instructions that last (a time, a cue) get none: an ack sat in the out slots where the agent rehearses its notes,
    and a model that copies its own out stream went on rehearsing "okay" (itself a response word) and said it at the
    act (session 5, seen with ``bench --trace``)."""
    t = e + (0.6 if b.input == "typed" else REACT)
    if b.rng.random() < 0.3 and t <= e + 1.4:  # over by the end of the 2 s
        b.agent(lang.ACKS[0], t)


# ----------------------------------------------------------------------------------------------- families
def gen_turn(b: Builder):
    rng, rules = b.rng, []
    t = float(rng.uniform(0.3, 1.5))
    for _ in range(int(rng.integers(1, 3))):
        q, a = lang.question_and_answer(rng)
        s, e = b.say(q, t)
        rules += [silent(s, e - 0.05), respond(e)]
        _, ae = b.agent(a, b.reply_at(e + REACT))
        t = ae + float(rng.uniform(0.6, 2.0))
    return t + 1.0, rules


def gen_pause(b: Builder):
    rng = b.rng
    q, a = lang.question_and_answer(rng)
    words = q.split()
    cut = int(rng.integers(1, len(words)))
    hes = str(rng.choice(["um", "uh", "hmm", "er"]))
    s, e1 = b.say(" ".join(words[:cut]) + "...", float(rng.uniform(0.3, 1.2)))
    ps, pe = b.say(hes, e1 + float(rng.uniform(0.2, 0.6)))
    t2 = pe + float(rng.uniform(0.5, 1.4))
    _, e = b.say(" ".join(words[cut:]), t2)
    rules = [{"kind": "no_takeover", "window": [round(e1, 3), round(t2, 3)]}, respond(e)]
    _, ae = b.agent(a, b.reply_at(e + REACT))
    return ae + 1.5, rules


def gen_backchannel(b: Builder):
    rng = b.rng
    t = s = float(rng.uniform(0.3, 1.0))
    for _ in range(int(rng.integers(3, 6))):
        _, e = b.say(b.sentence(), t)
        gap = float(rng.uniform(0.4, 1.1))
        if gap > 0.6 and rng.random() < 0.35:
            b.agent(str(rng.choice(lang.AGENT_BACKCHANNELS)), e + REACT)
            gap = max(gap, 0.9)
        t = e + gap
    return e + 1.5, [{"kind": "no_takeover", "window": [round(s, 3), round(e + 1.0, 3)]}]


def _agent_talks(b: Builder) -> tuple[str, list[str]]:
    """A request that makes the agent talk for a while, and what it then says item by item."""
    if b.rng.random() < 0.6:
        n = int(b.rng.choice([10, 15, 20]))
        request, items = f"Count to {lang.number_words(n)}.", [lang.number_words(i) for i in range(1, n + 1)]
    else:
        request, items = "List the cue words.", list(lang.CUE_WORDS)
    return request, items


def _speak_items(b: Builder, items: list[str], t: float, stop_at: float = np.inf) -> tuple[float, int]:
    """The agent says items one by one from t, starting none at or after ``stop_at``; returns its last end and how
    many items it started."""
    end, n = t, 0
    for it in items:
        if boundary(t) >= stop_at:
            break
        _, end = b.agent(it, t)
        n += 1
        t = end + float(b.rng.uniform(0.05, 0.2))
    return end, n


def gen_interrupt(b: Builder):
    rng = b.rng
    request, items = _agent_talks(b)
    _, e = b.say(request, float(rng.uniform(0.3, 1.0)))
    start = b.reply_at(e + REACT)
    onset = start + float(rng.uniform(1.5, 4.0))
    # the agent stops at the first boundary after hearing the interruption begin: mid-word if need be
    stop = boundary(onset + 0.1)
    _speak_items(b, items, start, stop_at=stop)
    b.cut_agent(stop)
    if rng.random() < 0.5:
        s, ie = b.say(str(rng.choice(lang.INTERRUPTIONS)), onset)
        rules = [{"kind": "continue", "window": [round(onset - 1.0, 3), round(onset - 0.1, 3)]},
                 {"kind": "stop", "after": round(s, 3), "within": STOP_WITHIN},
                 {"kind": "no_takeover", "window": [round(s + STOP_WITHIN, 3), round(ie + 2.5, 3)]}]
        return ie + 3.0, rules
    q, a = lang.question_and_answer(rng)
    s, qe = b.say(q, onset)
    # the answer waits for the stop rule's second to pass (its end included): a word started within it must end
    # within it (spec), so the answer to a short question ("Tell me a number", 0.67 s) said 0.15 s after it failed
    # its own session's rule
    _, ae = b.agent(a, b.reply_at(max(qe + REACT, s + STOP_WITHIN + 0.01)))
    rules = [{"kind": "continue", "window": [round(onset - 1.0, 3), round(onset - 0.1, 3)]},
             {"kind": "stop", "after": round(s, 3), "within": STOP_WITHIN},
             respond(qe)] + ([silent(s + STOP_WITHIN, qe - 0.05)] if qe - 0.05 > s + STOP_WITHIN else [])
    return ae + 1.5, rules


def gen_user_backchannel(b: Builder):
    """The user backchannels while the agent talks. The agent falls silent at the overlap, as it does for an
    interruption (``gen_interrupt``: it cannot yet tell which it is), and goes on once it has heard a backchannel:
    it says the item it was cut in again, or the next. Where that pause would last longer than ``RESUME_GAP`` (a long
    backchannel), it talks straight through."""
    rng = b.rng
    request, items = _agent_talks(b)
    _, e = b.say(request, float(rng.uniform(0.3, 1.0)))
    start = b.reply_at(e + REACT)
    s, be = b.say(str(rng.choice(lang.USER_BACKCHANNELS)), start + float(rng.uniform(1.2, 2.5 if len(items) <= 10
                                                                                       else 4.0)))
    stop, resume = boundary(s + 0.1), boundary(be + 0.05)  # stop: as for an interruption; resume: once heard
    end, n = _speak_items(b, items, start, stop_at=stop)
    if resume - min(end, stop) <= RESUME_GAP:
        b.cut_agent(stop)
        end, _ = _speak_items(b, items[n - (end > stop) :], resume)
    else:
        end, _ = _speak_items(b, items[n:], end + float(rng.uniform(0.05, 0.2)))
    return end + 1.0, [{"kind": "no_gap", "window": [round(s - 0.5, 3), round(be + 1.0, 3)], "gap": 0.8}]


def gen_other_speaker(b: Builder):
    rng = b.rng
    t = float(rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:  # the user talks to someone else
        name = str(rng.choice(lang.OTHER_NAMES))
        q, _ = lang.question_and_answer(rng) if rng.random() < 0.5 else (b.sentence(), "")
        _, e = b.say(f"Hey {name}, {q[0].lower() + q[1:]}", t)
    else:  # another voice in the background
        other = sample_voice(rng, b.split)
        e = t
        for _ in range(int(rng.integers(1, 3))):
            text = b.sentence() if rng.random() < 0.6 else lang.question_and_answer(rng)[0]
            _, e = b.say(text, e + float(rng.uniform(0.2, 0.8)), speaker="other", voice=other,
                         gain=float(rng.uniform(0.15, 0.4)))
    return e + 2.0, [silent(0.0, e + 2.0)]


def gen_timespeak(b: Builder):
    rng = b.rng
    r = str(rng.choice(lang.RESPONSE_WORDS))
    typed = _typed(b)
    every = rng.random() < 0.3 and r != "stop"
    if every:
        T = int(rng.integers(2, 9))
        text = lang.TIME_EVERY_FORMS[0].format(R=r, T=lang.number_words(T))
    else:
        T = int(rng.integers(2, 31))
        text = str(rng.choice(lang.TIME_ONCE_FORMS)).format(R=r, T=lang.number_words(T))
    E = b.instruct(text, float(rng.uniform(0.3, 1.5)), typed)
    ready = b.remember([r], E)
    times = [E + k * T for k in range(1, (int(rng.integers(2, 5)) if every else 1) + 1)]
    stop_at = None
    if every and rng.random() < 0.4:  # "Stop." ends the repetitions
        stop_at = times[-1] + T * 0.5
    busy, rules = [(E, E + 2.0)], []
    lag = TIMER_LAG["typed" if typed else "voice"] * DELTA  # a countdown counts from the instruction, then each act
    since = boundary(E)
    number = lang.number_words(T).split()[-1]
    if since + lag < b.perceived(number) - 1e-6:
        raise AssertionError(f"TIMER_LAG is too short for {text!r}: {number!r} is taken in later")
    for due in times:
        start = boundary(due)  # where the agent's word starts
        b.countdown(since + lag, start)
        since, _ = b.agent(r, due)
        lag = TIMER_LAG["voice"] * DELTA
        rules.append(say(r, due - 0.4, due + 1.0))
        busy.append((due - 0.4, due + 1.0))
    end = times[-1] + 2.0
    called_off = None
    if stop_at is not None:
        s, se = b.say("Stop.", stop_at)
        end = se + T + 0.5  # long enough that a missed stop would show
        called_off = boundary(se + REACT)
    elif rng.random() < 0.5 * b.difficulty and T >= 6:  # the user chats while the agent waits
        b.filler(E + 2.0, 1)
    if every:  # the next repetition is counted down until the session ends or "Stop." is heard
        b.countdown(since + lag, boundary(times[-1] + T), called_off)
    b.rehearse([r], ready, called_off if every else since)
    rules += silent_between(E + 2.0, end, busy)
    return end, rules


def gen_cuespeak(b: Builder):
    rng = b.rng
    r, c = str(rng.choice(lang.RESPONSE_WORDS)), str(rng.choice(lang.CUE_WORDS))
    typed = _typed(b)
    text = str(rng.choice(lang.CUE_FORMS)).format(R=r, C=c)
    E = b.instruct(text, float(rng.uniform(0.3, 1.5)), typed)
    ready = b.remember([c, r], E)
    b.rehearse([c, r], ready)
    t = E + float(rng.uniform(1.0, 2.5))
    others = [w for w in lang.CUE_WORDS if w != c]
    if b.drill:  # many decisions in one session: 3-5 cues among 3-6 other cue-list words
        plan = ["cue"] * int(rng.integers(3, 6)) + ["distractor"] * int(rng.integers(3, 7)) + ["filler"]
    else:
        n_cues = int(rng.choice([0, 1, 1, 2, 2, 3]))
        plan = ["cue"] * n_cues + ["distractor"] * int(rng.integers(0, 3)) + ["filler"] * int(rng.integers(0, 2))
    rng.shuffle(plan)
    busy, rules = [(E, E + 2.0)], []
    for p in plan:
        word = c if p == "cue" else str(rng.choice(others))
        if p == "filler":
            sentence = b.sentence()
        elif rng.random() < 0.4:
            sentence = word.capitalize() + "."
        else:
            ws = b.sentence().rstrip(".").split()
            k = int(rng.integers(1, len(ws) + 1))
            sentence = " ".join(ws[:k] + [word] + ws[k:]) + "."
        s, t = b.say(sentence, t)
        # the agent notes each cue-list word it hears (a filler may hold one too), then says the response if it
        # was the cue
        for w in [w for w in b.words if w.speaker == "user" and w.start >= s - 1e-6]:
            name = w.w.lower().strip(".,!?")
            if name not in lang.CUE_WORDS:
                continue
            heard = boundary(w.end + 0.05 + (DELTA if b.heard_late else 0.0))
            b.events.append(Event(heard, "heard", name))
            if name == c:
                b.agent(r, heard)
                rules.append(say(r, w.end, w.end + 1.0))
                busy.append((w.end, w.end + 1.0))
                t = max(t, w.end + 0.8)
        t += float(rng.uniform(0.5, 1.5))
    end = t + 1.5
    rules += silent_between(E + 2.0, end, busy)
    return end, rules


def gen_repcount(b: Builder):
    from .video import KINDS, render_reps

    rng = b.rng
    typed = _typed(b)
    E = b.instruct(str(rng.choice(lang.COUNT_FORMS)), float(rng.uniform(0.3, 1.0)), typed)
    n = int(rng.integers(2, 9))
    rv = render_reps(rng, kind=str(rng.choice(KINDS)), n_reps=n, fps=b.fps, size=80, period=(1.2, 2.5),
                     start=E + float(rng.uniform(0.5, 1.5)), split="train" if b.split == "train" else "test")
    b.video = rv.frames
    for i, c in enumerate(rv.rep_times, 1):
        b.agent(lang.number_words(i), c + 0.05)
    q_at = max(rv.rep_times[-1] + 1.0, (len(rv.frames) / b.fps) + 0.3)
    _, qe = b.say(lang.HOW_MANY, q_at)
    b.agent(lang.number_words(n), qe + REACT)
    rules = [{"kind": "count", "target": n, "tolerance": 1}, respond(qe)]
    b.marks = [round(c, 3) for c in rv.rep_times]
    return qe + 2.5, rules


# The operands of a delegated question said in one word (two to twenty, the round tens): a question drawn evenly from
# 2-100 has one of them in a quarter of its operands, and they are the ones heard wrong, as a compound ("sixty" as
# "sixty four", "eighteen" as "eighty"): see docs/training.md, session 61
SHORT_NUMBERS = tuple(range(2, 21)) + tuple(range(30, 100, 10))


def gen_delegate(b: Builder):
    rng = b.rng
    x, y = (int(v) for v in rng.integers(2, 101, size=2))
    if b.short_numbers:  # each operand with that chance a one-word number instead (a stream of its own)
        x, y = (int(b.short_rng.choice(SHORT_NUMBERS)) if b.short_rng.random() < b.short_numbers else v
                for v in (x, y))
    op = "times" if rng.random() < 0.6 else "plus"
    ans = x * y if op == "times" else x + y
    question = f"{lang.number_words(x)} {op} {lang.number_words(y)}"
    typed = _typed(b)
    E = b.instruct(f"What is {question}?", float(rng.uniform(0.3, 1.2)), typed)
    if b.note_questions:  # noted as taken in, the question is asked from the notes, not from audio a second back
        words = question.split()
        times = b.taken_in(words)
        # the words taken in by one boundary in one note event, in their order (events due in one micro-turn go out
        # latest first, out_schedule; remember's one event per word keeps that order, the bundled model's layout)
        for t in sorted(set(times)):
            b.events.append(Event(t, "note", " ".join(w for w, s in zip(words, times) if s == t)))
    delay = float(rng.uniform(1.0, 4.0))
    hold_start, hold_end = b.agent(str(rng.choice(lang.HOLDING)), b.reply_at(E + REACT))
    asked = boundary(hold_end)
    b.events.append(Event(asked, "delegate", question))
    arrives = asked + delay
    answer = lang.number_words(ans)
    b.text.append(TextEvent(round(arrives, 4), answer, "bg"))
    talk: list[tuple[float, float]] = []
    if rng.random() < 0.6:  # the user goes on talking while the answer is on its way
        s0 = hold_end + float(rng.uniform(0.2, 1.0))
        for _ in range(int(rng.integers(1, 3))):
            s, e = b.say(b.sentence(), s0)
            talk.append((s, e))
            s0 = e + float(rng.uniform(0.2, 0.45))  # short gaps: not yet a turn end
    # the answer is said once it is back and the user has been silent for 0.5 s
    t = max(arrives + 0.2, max((e for _, e in talk), default=0.0) + 0.5)
    b.agent(answer, t)
    b.hold(answer, arrives, boundary(t))
    rules = [say(answer, E + delay, t + 3.0)] + [silent(s + 0.3, e) for s, e in talk if e - s > 0.4]
    return t + 3.0, rules, delay


def gen_translate(b: Builder):
    rng = b.rng
    typed = _typed(b)
    E = b.instruct(lang.TRANSLATE_FORM, float(rng.uniform(0.3, 1.0)), typed)
    _maybe_ack(b, E)
    t, rules = E + float(rng.uniform(0.8, 1.8)), []
    for w in rng.choice(list(lang.SPANISH), size=int(rng.integers(3, 8)), replace=False):
        w = str(w)
        _, e = b.say(w.capitalize() + ".", t)
        b.agent(lang.SPANISH[w], e + REACT)
        rules.append(say(lang.SPANISH[w], e, e + 2.0))
        t = e + float(rng.uniform(0.5, 1.3))
    return t + 2.0, rules


def gen_refusal(b: Builder):
    rng = b.rng
    typed = _typed(b)
    E = b.instruct(str(rng.choice(lang.REFUSAL_REQUESTS)), float(rng.uniform(0.3, 1.2)), typed)
    _, ae = b.agent(lang.REFUSAL_REPLY, b.reply_at(E + (0.6 if typed else REACT)))
    return ae + 1.5, [say("sorry", E, E + 2.0)]


GENERATORS = {
    "turn": gen_turn, "pause": gen_pause, "backchannel": gen_backchannel, "interrupt": gen_interrupt,
    "user_backchannel": gen_user_backchannel, "other_speaker": gen_other_speaker, "timespeak": gen_timespeak,
    "cuespeak": gen_cuespeak, "repcount": gen_repcount, "delegate": gen_delegate, "translate": gen_translate,
    "refusal": gen_refusal,
}
FAMILIES = tuple(GENERATORS)


# The options that choose the user's voice (a scenario set may take them too); a shard's session info keeps them
VOICE_OPTIONS = ("generated_voices", "generated_accents", "festival", "mbrola", "kokoro", "piper", "low_slt")


def check_options(split: str, generated_voices: float = 0.0, generated_accents: float = 0.0, cue_drill: float = 0.0,
                  typed: float | None = None, note_questions: bool = False, heard_late: bool = False,
                  festival: float = 0.0, mbrola: float = 0.0, kokoro: float = 0.0, piper: float = 0.0,
                  late_replies: float = 0.0, short_numbers: float = 0.0, low_slt: float = 0.0,
                  more_talk: float = 0.0, more_words: float = 0.0, odd_words: float = 0.0) -> None:
    """ValueError unless ``generate``'s options are valid for ``split``: the chances in [0, 1], all but the two
    flags (``note_questions``, ``heard_late``: out tokens only), ``kokoro`` (whose validation split has a voice of
    its own) and ``piper`` (validation only) for training only."""
    for name, p in (("generated_voices", generated_voices), ("generated_accents", generated_accents),
                    ("cue_drill", cue_drill), ("typed", 0.0 if typed is None else typed), ("festival", festival),
                    ("mbrola", mbrola), ("kokoro", kokoro), ("piper", piper), ("late_replies", late_replies),
                    ("short_numbers", short_numbers), ("low_slt", low_slt), ("more_talk", more_talk),
                    ("more_words", more_words), ("odd_words", odd_words)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a chance in [0, 1], got {p!r}")
    if generated_accents and not generated_voices:
        raise ValueError("generated accents are spoken by generated voices: set generated_voices too")
    if generated_voices and split != "train":
        raise ValueError(f"generated voices are for training only; the {split} split keeps its held-out voices")
    for engine, p in (("festival", festival), ("mbrola", mbrola), ("low_slt", low_slt)):
        if p and split != "train":
            what = "flite's slt in a man's register (low_slt) is" if engine == "low_slt" else f"{engine}'s voices are"
            raise ValueError(f"{what} for training only; the {split} split keeps its held-out voices")
    if kokoro and split == "test":
        raise ValueError("kokoro has no test voice; the test split keeps its held-out voices")
    if piper and split != "val":
        raise ValueError(f"piper's voice is held out for validation; the {split} split "
                         + ("never hears it" if split == "train" else "keeps its held-out voices"))
    if festival + mbrola + kokoro + piper + low_slt > 1.0:
        raise ValueError(f"festival + mbrola + kokoro + piper + low_slt is the chance of one of those voices: at most "
                         f"1, got {festival + mbrola + kokoro + piper + low_slt}")
    if cue_drill and split != "train":
        raise ValueError(f"cue drills are for training only; the {split} split keeps the scenario families' sessions")
    if typed is not None and split != "train":
        raise ValueError(f"a typed share is for training only; the {split} split keeps difficulty's")
    if late_replies and split != "train":
        raise ValueError(f"late replies are for training only; the {split} split has no agent side to move")
    if short_numbers and split != "train":
        raise ValueError(f"short numbers are for training only; the {split} split keeps its questions as drawn")
    if more_talk and split != "train":
        raise ValueError(f"more talk is for training only; the {split} split keeps its held-out sentences")
    if more_words and split != "train":
        raise ValueError(f"more words are for training only; the {split} split keeps its held-out sentences")
    if odd_words and split != "train":
        raise ValueError(f"odd words are for training only; the {split} split keeps its held-out sentences")


def generate(family: str, seed: int, split: str = "train", difficulty: float = 1.0, index: int = 0,
             generated_voices: float = 0.0, generated_accents: float = 0.0, cue_drill: float = 0.0,
             typed: float | None = None, note_questions: bool = False, heard_late: bool = False,
             festival: float = 0.0, mbrola: float = 0.0, kokoro: float = 0.0, piper: float = 0.0,
             late_replies: float = 0.0, short_numbers: float = 0.0, low_slt: float = 0.0,
             more_talk: float = 0.0, more_words: float = 0.0, odd_words: float = 0.0) -> Session:
    """One session of ``family``, deterministic for its arguments.

    ``generated_voices``: the chance that the user's espeak-ng voice gets a generated variant (``speech.
    generated_variant``: a voice of its own) instead of its catalogue variant; ``generated_accents``: the chance
    that such a voice also speaks with a generated accent (``speech.generated_accent``). Training only. The choices
    are drawn from a stream of their own, so the session is otherwise the one drawn without them (its words, text,
    noise, times drawn; the times that follow the user's speech move with its length).

    ``cue_drill``: the chance that a cuespeak session is a drill, with 3-5 cues among 3-6 other cue-list words
    (against 0-3 and 0-2), so that it holds several times the decisions to act or not (training only; whether it is
    one is drawn from a stream of its own, and a session that is not one is the one drawn without the option).

    ``typed``: the chance that an instruction is typed rather than spoken, in place of the one difficulty sets (0.8
    at difficulty 0 down to 0.5 at 1): 0 makes every instruction spoken, so a part can drill hearing them (training
    only; decided by the same draw, so the session is otherwise the one drawn without the option).

    ``note_questions``: in delegate sessions the agent notes each word of the question as it takes it in (``<note>``
    and the word, as an instruction's words are noted), so that the delegation copies notes a few tokens back
    instead of finding the numbers in audio a second or more back. It changes the agent's out tokens only, so
    validation shards may have it too (to score the notes); a scenario set, which has no out tokens, cannot.

    ``heard_late``: in cuespeak sessions the agent notes each cue-list word it hears (and says the response after the
    cue's) one micro-turn later than otherwise, for a model that hears back (``ModelConfig.hear_back``): at that
    micro-turn the word its listening head heard at the word's end is one of its inputs, to be copied, where a
    micro-turn earlier the out slots must find it in the audio tokens' states below the last block (the listening
    head names 81 % of cue-list words right at their end, the heard token of the bundled model was right for 57 %:
    docs/training.md, session 29). The response still starts within 0.45 s of the cue's end, inside the rule's
    second. Out tokens only, as ``note_questions``.

    ``festival``: the chance that the user speaks with one of festival's voices (``speech.FESTIVAL_VOICES``, its pitch
    and rate drawn as for the others, ked's pitch from its floor, ``PITCH_FLOOR``), in place of the voice drawn
    otherwise: two more kinds of synthesis, for training only. Drawn from the voice options' stream after the
    generated voice's draws, so the session is otherwise the one drawn without it.

    ``mbrola``: the same for MBROLA's voices (``speech.MBROLA_VOICES``: four more recorded speakers), decided by the
    same draw (festival's voice below ``festival``, MBROLA's below ``festival + mbrola``), so a part made with
    ``festival`` alone is the same with ``mbrola=0``.

    ``kokoro``: the same again for Kokoro's neural voices (``speech.KOKORO_VOICES``), below ``festival + mbrola +
    kokoro``: in training a blend of four of its voices (``speech.kokoro_blend``: a speaker of its own), in
    validation the fifth, held out (to measure how a neural voice never heard is heard).

    ``piper``: the same again for Piper's voice (``speech.PIPER_VOICES``: joe, a neural voice of an American man, the
    clearest here to a recogniser of people's speech), below ``festival + mbrola + kokoro + piper``; validation only:
    a human-like voice that no training hears.

    ``low_slt``: the same again for flite's slt in a man's register (``speech.low_slt_voice``), below ``festival +
    mbrola + kokoro + piper + low_slt``; training only. slt is the training split's one clustergen voice, a woman's;
    the held-out flite voices (awb, rms) are clustergen men, and they are the voices heard worst (docs/training.md,
    session 65).

    ``late_replies``: the chance that a reply to a user's turn (an answer, a refusal, a holding phrase, the start of
    a count or list) starts one or two micro-turns later than the first boundary it may (``Builder.reply_at``; the
    lateness drawn from a stream of its own, so the session is otherwise the one drawn without it, its later times
    moved with the reply). Training only. Without it every reply starts on that boundary, and a model that let the
    moment pass had never seen a reply after it: the bundled model's chance of speaking fell from 0.35 to 0.00 the
    micro-turn after it let a question go (docs/training.md, "Session 45").

    ``short_numbers``: the chance that each operand of a delegated question is a number said in one word
    (``SHORT_NUMBERS``: two to twenty, the round tens) in place of the one drawn from 2-100, where they are a quarter
    of the operands and the ones heard wrong (as compounds). Training only; drawn from a stream of its own, so the
    session is otherwise the one drawn without it (its later times moved with the question's length).

    ``more_talk``: the chance that each ordinary sentence the user says (``Builder.sentence``) comes from a larger
    training grammar (``language._MORE_FORMS``: other shapes of sentence, and harmless ones with the harmful requests'
    words), so that a sentence never heard is less often taken for a request. Training only; drawn from a stream of
    its own, so the session is otherwise the one drawn without it (its later times moved with the sentences').

    ``more_words``: the same with the wide grammar (``language._WIDE_LEX``, ``_WIDE_FORMS``: the larger grammar over
    some 270 more words, and harmless statements with "can", "break", "car"), from a stream of its own drawn after
    ``more_talk``'s (which it overrides where both draw), so that the listening head knows more words than the ones
    a held-out sentence was heard as (docs/training.md, session 67). Training only.

    ``odd_words``: the chance that each ordinary sentence, once chosen, has some of its content words made up
    (``language.oddify``: English-like words the task language never says), from a stream of its own, so that the
    model hears words it cannot place in ordinary talk, as held-out and hidden sentences have, and not only in
    requests it knows. Training only."""
    if family not in GENERATORS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    check_options(split, generated_voices, generated_accents, cue_drill, typed, note_questions, heard_late, festival,
                  mbrola, kokoro, piper, late_replies, short_numbers, low_slt, more_talk, more_words,
                  odd_words)
    key = [seed, FAMILIES.index(family), index, ["train", "val", "test"].index(split)]
    drill = family == "cuespeak" and bool(cue_drill) and np.random.default_rng(key + [2]).random() < cue_drill
    b = Builder(np.random.default_rng(key), split, difficulty, generated_voices, np.random.default_rng(key + [1]),
                generated_accents, drill, typed, note_questions, heard_late, festival, mbrola, kokoro, piper,
                late_replies, np.random.default_rng(key + [3]), short_numbers, np.random.default_rng(key + [4]),
                low_slt, more_talk, np.random.default_rng(key + [5]), more_words, np.random.default_rng(key + [6]),
                odd_words, np.random.default_rng(key + [7]))
    res = GENERATORS[family](b)
    duration, rules = res[0], res[1]
    delay = res[2] if len(res) > 2 else None
    tl = b.finish(duration, {"family": family} | ({"drill": True} if b.drill else {}))
    return Session(f"{family}-{index:05d}", family, tl, rules, delay, {"rep_times": b.marks} if b.marks else {})
