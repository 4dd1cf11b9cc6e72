"""The micro-turn layout: how a session becomes the one token sequence the model reads, and back.

Time is cut into micro-turns of ``delta`` seconds; micro-turn t covers [t*delta, (t+1)*delta). Every micro-turn is
the same fixed block of ``Layout.length`` tokens (default 1 + 2 + 1 + 2 + 3 = 9), so compute per micro-turn is
constant and token distance is elapsed time:

    input of t : [clock] [audio x n_audio] [video x n_video] [text_in x n_text_in]
    output of t: [out x n_out]

- clock: the micro-turn index t (the model embeds the absolute time t * delta).
- audio: the user's audio of the window as dMel bins, ``frames_per_token`` frames (12.5 ms each) per token.
- video: the camera frame shown at t * delta, resized; the model embeds its patches and merges them into one token
  (or uses a "no frame" vector).
- text_in: typed user text (after a ``<typed>`` marker) and background-model answers (after ``<bg>``) that arrived
  in the window, queued: text longer than the slots continues in the next micro-turns; empty slots hold ``<pad>``.
- out: what the agent does in the *next* window [(t+1)*delta, (t+2)*delta): at most ``n_out - 1`` text tokens (the
  words it starts saying then, a delegation ``<dlg> query </dlg>``, silent notes ``<note> word``, or a cue-list word
  it has just heard, ``<heard:word>``, which the response to a cue follows in the same micro-turn), then ``<eot>``;
  the rest ``<pad>``. While the agent waits to do something at a time,
  each micro-turn's out starts with a timer token ``<tk>``: k micro-turns left until the one that says it (a
  countdown by one per micro-turn, so the model need not measure time from the clock); while an instruction lasts,
  the slots left free rehearse its notes (those of a background answer held until it may be said each round after a
  ``<bg>``: where the answer starts). Silence is a lone ``<eot>``. The flow head generates the window's agent
  mel frames from the last out slot.

A word the agent starts at second s is therefore emitted by micro-turn ``floor(s / delta) - 1`` and decodes to start
at the beginning of the window it starts in. Targets for training: the out tokens (loss up to and including
``<eot>``), the agent's log-mel of the next window, and for each audio token the first token of the user's word
under way there (``<sil>`` when none): the auxiliary listening objective.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..codecs import dmel
from ..codecs.patches import PATCH, SIZE, n_patches, resize
from .timeline import Event, Timeline
from .tokenizer import (BG, CUE_WORDS, DLG, DLG_END, EOT, NOTE, PAD, SIL, SPECIALS, TYPED, Tokenizer, heard, is_timer,
                        timer)
from .words import Word

FRAME_S = dmel.HOP / dmel.SAMPLE_RATE  # 12.5 ms
LOOKBACK_S = (dmel.WIN - dmel.HOP) / dmel.SAMPLE_RATE  # 37.5 ms: a causal frame still hears that much past audio
VOICED = -5.0  # a mel frame whose mean log10 value exceeds this is speech (silence decodes to -7)


def voiced_frames(mel) -> np.ndarray:
    """[F, 80] log-mel -> bool [F]: the frames that hold speech."""
    return np.asarray(mel).mean(-1) > VOICED


@dataclass(frozen=True)
class Layout:
    delta: float = 0.2
    frames_per_token: int = 8
    video_size: int = SIZE
    patch: int = PATCH
    n_text_in: int = 2
    n_out: int = 3
    video: bool = True

    def __post_init__(self):
        for name in ("frames_per_token", "video_size", "patch", "n_text_in", "n_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {v!r}")
        if not (0.05 <= self.delta <= 1.0):
            raise ValueError(f"delta must be between 0.05 and 1.0 s, got {self.delta}")
        frames = self.delta / FRAME_S
        if abs(frames - round(frames)) > 1e-6 or round(frames) % self.frames_per_token:
            raise ValueError(f"delta {self.delta} s must be a whole number of {self.frames_per_token}-frame tokens "
                             f"({self.frames_per_token * FRAME_S * 1000:g} ms each), e.g. 0.1, 0.2 or 0.3; "
                             f"change frames_per_token for other steps")
        if self.n_out < 2 or self.n_text_in < 2:
            raise ValueError("n_out and n_text_in must be at least 2")

    @property
    def frames(self) -> int:  # dMel frames per micro-turn
        return int(round(self.delta / FRAME_S))

    @property
    def samples(self) -> int:
        return self.frames * dmel.HOP

    @property
    def n_audio(self) -> int:
        return self.frames // self.frames_per_token

    @property
    def n_patches(self) -> int:
        return n_patches(self.video_size, self.patch)

    @property
    def n_video(self) -> int:
        return 1 if self.video else 0  # the frame's patches are embedded and merged into one token

    @property
    def n_in(self) -> int:
        return 1 + self.n_audio + self.n_video + self.n_text_in

    @property
    def length(self) -> int:
        return self.n_in + self.n_out

    def n_turns(self, duration: float) -> int:
        return int(np.ceil(duration / self.delta - 1e-9))

    def slot_kinds(self) -> list[str]:
        """The kind of each position in one micro-turn (for docs, pictures and tests)."""
        return (["clock"] + ["audio"] * self.n_audio + ["video"] * self.n_video + ["text_in"] * self.n_text_in
                + ["out"] * self.n_out)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def text_tokens(tok: Tokenizer, text: str, source: str = "typed") -> list[int]:
    """The input tokens a text enters the model as: its source's marker, then its words."""
    return [BG if source == "bg" else TYPED] + tok.encode(" " + text.strip())


class TextQueue:
    """Input text waiting for text_in slots. Offline layout and the streaming runtime use this same queue."""

    def __init__(self, layout: Layout, tokenizer: Tokenizer):
        self.layout, self.tok = layout, tokenizer
        self.pending: deque[int] = deque()

    def push(self, text: str, source: str = "typed"):
        self.pending.extend(text_tokens(self.tok, text, source))

    def take(self) -> np.ndarray:
        n = self.layout.n_text_in
        ids = [self.pending.popleft() for _ in range(min(n, len(self.pending)))]
        return np.array(ids + [PAD] * (n - len(ids)), dtype=np.int64)


def audio_tokens(bins: np.ndarray, layout: Layout) -> np.ndarray:
    """dMel bins [frames, 80] of one micro-turn -> [n_audio, frames_per_token, 80]."""
    if bins.shape != (layout.frames, dmel.N_MELS):
        raise ValueError(f"a micro-turn has {layout.frames} dMel frames, got {bins.shape}")
    return bins.reshape(layout.n_audio, layout.frames_per_token, dmel.N_MELS)


def video_frame(frame, layout: Layout) -> tuple[np.ndarray, bool]:
    """The camera frame of a micro-turn (or None) -> uint8 [size, size, 3] (the model cuts it into patches) and
    whether a frame was there."""
    if frame is None or not layout.video:
        return np.zeros((layout.video_size, layout.video_size, 3), np.uint8), False
    return resize(frame, layout.video_size), True


def encode_inputs(tl: Timeline, layout: Layout, tok: Tokenizer) -> dict[str, np.ndarray]:
    """The input side of every micro-turn of a timeline."""
    T = layout.n_turns(tl.duration)
    user = np.zeros(T * layout.samples, np.float32)
    track = tl.track("user")[: len(user)]
    user[: len(track)] = track
    bins = dmel.encode(user).reshape(T, layout.frames, dmel.N_MELS)
    queue, text_in = TextQueue(layout, tok), np.zeros((T, layout.n_text_in), np.int64)
    events = sorted(tl.text, key=lambda e: e.t)
    vid = [video_frame(tl.frame_at(t * layout.delta), layout) for t in range(T)]
    j = 0
    for t in range(T):
        while j < len(events) and events[j].t < (t + 1) * layout.delta:
            queue.push(events[j].text, events[j].source)
            j += 1
        text_in[t] = queue.take()
    return {"clock": np.arange(T, dtype=np.int64),
            "audio": np.stack([audio_tokens(b, layout) for b in bins]),
            "video": np.stack([v for v, _ in vid]),
            "video_on": np.array([on for _, on in vid], dtype=bool),
            "text_in": text_in}


def note(word: str, tok: Tokenizer) -> list[int]:
    """A note of a word: ``<note>`` and the word, a cue-list word as its heard token (``<note> <heard:tiger>``), so
    that a cue heard later is the very token noted: telling it from the other cue-list words is spotting a token
    written before, the plainest match for attention (session 14: with the cue noted as " tiger", its model acted
    after 94 % of the other cue-list words heard in training drills, as after 94 % of the cues, 100 steps in)."""
    name = word.lower().strip(".,!?")
    return [NOTE, heard(name)] if name in CUE_WORDS else [NOTE] + tok.encode_word(word)


def out_schedule(tl: Timeline, layout: Layout, tok: Tokenizer) -> np.ndarray:
    """The agent's out tokens per micro-turn [T, n_out]: its words at their onsets, delegations, notes and heard
    words (``<heard:pencil>``) at their times (before words said in the same micro-turn), while a timer runs the
    micro-turns left as the first token, and while notes are rehearsed, their tokens in the slots left free (a held
    background answer's rounds each opened by ``<bg>``, alone in its micro-turn: a note and its word stay in one)."""
    T = layout.n_turns(tl.duration)
    turn = lambda s: max(0, int(np.floor(s / layout.delta + 1e-6)) - 1)  # noqa: E731  the micro-turn that emits s
    due: list[tuple[int, int, list[int]]] = []  # (micro-turn, order, tokens)
    for i, w in enumerate(sorted(tl.words_of("agent"), key=lambda w: w.start)):
        due.append((turn(w.start), i, tok.encode_word(w.w)))
    countdown = np.zeros(T, np.int64)  # micro-turns left on a running timer (0: none)
    recall: list[list[int] | None] = [None] * T  # the notes rehearsed in each micro-turn's free slots
    for i, e in enumerate(tl.events):
        if e.kind == "delegate":
            due.append((turn(e.t), -1 - i, [DLG] + tok.encode(" " + e.text.strip()) + [DLG_END]))
        elif e.kind == "note":
            due.append((turn(e.t), -1 - i, [x for w in e.text.split() for x in note(w, tok)]))
        elif e.kind == "heard":
            due.append((turn(e.t), -1 - i, [heard(w) for w in e.text.split()]))
        elif e.kind in ("rehearse", "recite"):
            words, end = e.rehearsal()
            cycle = [BG] * (e.kind == "recite") + [x for w in words for x in note(w, tok)]
            for m in range(turn(e.t), min(T, turn(end) if end < np.inf else T)):
                recall[m] = cycle
        elif e.kind == "timer":
            at, end = e.timer()
            fire, stop = turn(at), min(T, turn(end) if end < np.inf else T)
            m = np.arange(turn(e.t), min(fire, stop))
            countdown[m] = fire - m
    due.sort(key=lambda d: (d[0], d[1] >= 0, d[1]))
    out = np.full((T, layout.n_out), PAD, np.int64)
    pending: deque[int] = deque()
    k = j = 0  # j: the next token of the rehearsal cycle
    for t in range(T):
        while k < len(due) and due[k][0] <= t:
            pending.extend(due[k][2])
            k += 1
        # a note and its word stay in one micro-turn: one due now takes the timer's slot this once
        row = [timer(countdown[t])] if countdown[t] and not (pending and pending[0] == NOTE) else []
        while pending and len(row) < layout.n_out - 1:
            if pending[0] == NOTE and len(row) == layout.n_out - 2:
                break
            row.append(pending.popleft())
        if recall[t] is None:
            j = 0
        elif not pending:  # free slots repeat the notes
            cycle = recall[t]
            # a note may end a micro-turn only when its word follows the next micro-turn's timer (see OutputDecoder)
            carry = (t + 1 < T and countdown[t + 1] and recall[t + 1] is cycle
                     and not (k < len(due) and due[k][0] <= t + 1))
            while len(row) < layout.n_out - 1:
                if cycle[j % len(cycle)] == NOTE and len(row) == layout.n_out - 2 and not carry:
                    break
                row.append(cycle[j % len(cycle)])
                j += 1
        out[t, : len(row)] = row
        out[t, len(row)] = EOT
    return out


def word_ends(heard: np.ndarray) -> np.ndarray:
    """[T, n_audio] bool: the audio tokens where a heard word ends, from the listening targets [T, n_audio]
    (``listen_targets``): its last token, followed by ``<sil>`` or another word."""
    flat = heard.reshape(-1)
    return ((flat != SIL) & (np.append(flat[1:], SIL) != flat)).reshape(heard.shape)


def recaps(out: np.ndarray, heard: np.ndarray | None = None, near: int = 2) -> np.ndarray:
    """Which of a session's out tokens [T, n_out] repeat what the agent wrote just before: a running timer's values
    after its first (each one less than the last), and a note (its ``<note>`` and its word) of a word noted at most
    ``near`` micro-turns earlier: the steady rehearsal. The rest carry news (when a note is taken and of which word, a
    heard token, a timer's first value, what is said, and a rehearsal that must find its word further back: the first
    after the notes are taken, the first after an act). The training loss may weigh recaps less (``microturn train
    --recap-weight``): they are many and easy, and at full weight they drown the few tokens that carry the
    instruction. Session 5 counted every rehearsal as a recap; its model copied the near ones (99 %) but only half of
    the far ones, and live a wrong first rehearsal was then copied faithfully to the act. A note's word is found by
    OutputDecoder's rule: the next token, or the one after the next micro-turn's timer.

    With ``heard`` (the listening targets [T, n_audio]) the first token of the micro-turn in which a heard word ends,
    and of the one after, is never a recap: these are the moments to act on a cue, and going on with the rehearsal
    there is the decision not to, worth as much as acting. Session 8's model, with those rehearsals weighed down
    tenfold against the act, did not tell a cue from the other cue words: teacher-forced on training shards it put the
    response word first there after 54 % of the cues and 58 % of the other cue words said (``scripts/cue_report.py``),
    and live it failed 11 of 12 validation cue scenarios, most with the instruction noted right."""
    rep = np.zeros(out.shape, bool)
    noted: dict[int, int] = {}  # word -> the micro-turn it was last noted in
    note_at = None  # the slot of a <note> whose word has not come yet
    timed = False  # the last micro-turn ran a timer
    for t, row in enumerate(out.tolist()):
        if note_at is not None and not is_timer(row[0]):
            note_at = None
        timer_now = False
        for k, x in enumerate(row):
            if x in (EOT, PAD):
                break
            if is_timer(x):
                rep[t, k], timer_now = timed, True
            elif note_at is not None:
                if t - noted.get(x, -near - 1) <= near:
                    rep[note_at] = rep[t, k] = True
                noted[x] = t
                note_at = None
            elif x == NOTE:
                note_at = (t, k)
        timed = timer_now
    if heard is not None:
        ends = word_ends(heard).any(1)
        rep[ends | np.append(False, ends[:-1]), 0] = False
    return rep


def agent_mel(tl: Timeline, layout: Layout) -> np.ndarray:
    """The agent's log-mel per micro-turn's output window: [T, frames, 80] (window t+1 for micro-turn t)."""
    T = layout.n_turns(tl.duration)
    agent = np.zeros((T + 1) * layout.samples, np.float32)
    track = tl.track("agent")[: len(agent)]
    agent[: len(track)] = track
    mel = dmel.log_mel(agent).numpy().reshape(T + 1, layout.frames, dmel.N_MELS)
    return mel[1:]


def end_token(end: float, span: float) -> int:
    """The audio token a word ending at ``end`` seconds ends in: k with k * span < end <= (k + 1) * span (an end on
    a token's edge, to rounding, is in the token before it), for tokens ``span`` seconds long."""
    return int(np.ceil(round(end / span, 9))) - 1


def end_label(end: float, span: float, ends: float | None) -> int | None:
    """The token ``listen_targets`` names a word ending at ``end`` at for its end, with ``ends``: the token it ends
    in, where the word reaches at least ``ends`` seconds into it (None where it does not, or without ``ends``)."""
    if ends is None:
        return None
    k = end_token(end, span)
    return k if round(end - k * span, 9) >= round(ends, 9) else None  # (to rounding, as end_token)


def check_ends(ends: float | None, layout: Layout) -> None:
    """``listen_targets``'s ``ends`` must be None or 0 to one audio token, in seconds (not True or False: it was a
    flag before session 64, and False would now mean 0 s, every end)."""
    if isinstance(ends, bool):
        raise TypeError("the listening targets' ends is seconds or None, not True or False")
    span = layout.delta / layout.n_audio
    if ends is not None and not 0 <= ends <= span:
        raise ValueError(f"the listening targets' ends must be 0-{span:g} s (how far into the audio token it ends in "
                         f"a word must reach to be named there), got {ends:g}")


def listen_targets(tl: Timeline, layout: Layout, tok: Tokenizer, ends: float | None = None) -> np.ndarray:
    """For each audio token [T, n_audio]: first token of the non-agent word covering its middle, else ``<sil>``.
    The word is lower-cased, since case is not heard: written "Rocket" (a cue said on its own) begins with the
    token of a capital R that many words share, and would teach the listener nothing of which word it was.

    With ``ends`` (seconds), the token a word ends in names that word too, over the word covering its middle (the
    later word, where two end in one token), where the word reaches at least ``ends`` into it: a word whose last
    sounds spill into the next token ("fiftee|n") is then named where it is heard whole, not only where half of it
    is. 0 names every word at its end; 0.025 leaves a token to the next word where only the first quarter of it is
    the word before's (docs/training.md, sessions 62-64)."""
    check_ends(ends, layout)
    T = layout.n_turns(tl.duration)
    span = layout.delta / layout.n_audio
    mids = (np.arange(T * layout.n_audio) + 0.5) * span
    target = np.full(T * layout.n_audio, SIL, np.int64)
    said = [(w, ids[0]) for w in tl.words if w.speaker != "agent" and (ids := tok.encode_word(w.w.lower()))]
    for w, first in said:
        target[(mids >= w.start) & (mids < w.end)] = first
    for w, first in sorted(said, key=lambda p: p[0].end):
        k = end_label(w.end, span, ends)
        if k is not None and 0 <= k < len(target):
            target[k] = first
    return target.reshape(T, layout.n_audio)


def encode_timeline(tl: Timeline, layout: Layout, tok: Tokenizer,
                    listen_ends: float | None = None) -> dict[str, np.ndarray]:
    """Timeline -> everything the model trains on (inputs, targets); see the module docstring. ``listen_ends``:
    ``listen_targets``'s ``ends``."""
    return encode_inputs(tl, layout, tok) | {"out": out_schedule(tl, layout, tok), "mel": agent_mel(tl, layout),
                                             "listen": listen_targets(tl, layout, tok, listen_ends)}


def out_loss_mask(out):
    """Which out slots are predicted: every slot up to and including the first ``<eot>`` of its micro-turn.
    Works on numpy arrays and torch tensors alike (the model's loss uses it)."""
    is_eot = out == EOT
    after = is_eot.cumsum(-1) - is_eot.astype(int) if isinstance(is_eot, np.ndarray) else \
        is_eot.cumsum(-1) - is_eot.long()  # > 0 strictly after the first <eot>
    return after == 0


class OutputDecoder:
    """Turns the agent's out tokens (and mel) into words with times and delegation events, one micro-turn at a time.

    The streaming runtime and ``decode_outputs`` both use it. A word starts at the window its first token was emitted
    for, (t + 1) * delta. It ends with its last voiced mel frame: it is final once a whole window without voice
    follows its voice, or the next word starts. Without audio (or with none voiced) it lasts one micro-turn. A word
    always ends by the time the next one starts.
    """

    def __init__(self, layout: Layout, tok: Tokenizer, t0: int = 0):
        self.layout, self.tok, self.t = layout, tok, t0
        self.word: list | None = None  # [start, token ids, end of its last voiced frame or None]
        self.query: list[int] | None = None
        self.asked = 0.0
        self.noting = False  # a <note> came: the next token is written, not said
        self.said: list[int] = []  # the spoken tokens of the last micro-turn pushed (no controls, queries, notes)

    def _close(self, limit: float = np.inf) -> list[Word]:
        if self.word is None:
            return []
        s, ids, end = self.word
        self.word = None
        end = s + self.layout.delta if end is None else end
        return [Word(self.tok.decode(ids).strip(), round(s, 6), round(float(min(end, limit)), 6), "agent")]

    def push(self, out_row, mel: np.ndarray | None = None) -> tuple[list[Word], list[Event]]:
        """One micro-turn's out tokens [n_out] (and the agent mel of its window [frames, 80]) -> the words that
        became final and the delegations made."""
        when = round((self.t + 1) * self.layout.delta, 6)
        self.t += 1
        words: list[Word] = []
        events: list[Event] = []
        self.said = []
        if self.noting and not is_timer(int(out_row[0])):
            self.noting = False  # a note's word may follow only the next micro-turn's timer
        for tid in (int(x) for x in out_row):
            if tid in (EOT, PAD):
                break
            if is_timer(tid):
                continue
            if self.noting:
                self.noting = False
            elif tid == NOTE:
                self.noting = True
            elif tid == DLG:
                self.query, self.asked = [], when
            elif tid == DLG_END:
                if self.query is not None:
                    events.append(Event(self.asked, "delegate", self.tok.decode(self.query).strip()))
                self.query = None
            elif self.query is not None:
                self.query.append(tid)
            elif tid < len(SPECIALS):  # other controls and timers: not said
                continue
            elif self.tok.starts_word(tid) or self.word is None:
                words += self._close(when)
                self.word = [when, [tid], None]
                self.said.append(tid)
            else:
                self.word[1].append(tid)
                self.said.append(tid)
        if self.word is not None:
            if mel is not None:
                on = np.flatnonzero(voiced_frames(mel))
                if len(on):
                    # the last voiced frame ends LOOKBACK_S after the speech it heard did
                    self.word[2] = max(self.word[0] + FRAME_S, when + (on[-1] + 1) * FRAME_S - LOOKBACK_S)
                elif self.word[2] is not None or self.word[0] < when:
                    words += self._close()  # a whole silent window after it: the word is over
            elif self.word[0] < when:
                words += self._close()
        return words, events

    def flush(self) -> list[Word]:
        return self._close()


def decode_outputs(out: np.ndarray, layout: Layout, tok: Tokenizer, mel: np.ndarray | None = None,
                   t0: int = 0) -> tuple[list[Word], list[Event]]:
    """Out tokens [T, n_out] (and optionally the agent mel [T, frames, 80]) -> agent words and events."""
    dec, words, events = OutputDecoder(layout, tok, t0), [], []
    for t in range(out.shape[0]):
        w, e = dec.push(out[t], None if mel is None else mel[t])
        words += w
        events += e
    return words + dec.flush(), events
