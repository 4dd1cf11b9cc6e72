"""The background model: the interaction model's delegations go here and the answers re-enter the stream later.

A backend answers a query (text) with text. ``Background`` runs backends off the session's thread and hands back
answers with the session-clock time they arrived at, so a slow, failing or hanging backend never stalls a session.
Backends: ``LocalTools`` (a calculator that reads English number words, and the clock) and ``OpenAIChat`` (any
OpenAI-compatible chat-completions endpoint). A query is asked when it is complete (the end of the micro-turn that
wrote its ``</dlg>``, though the delegation event is dated at its ``<dlg>``). In simulated time its answer arrives
``delay`` seconds of session clock later (the bench sets it per scenario); in real time when the backend returns.
A backend's answer must be text (a ``str`` that is valid Unicode): anything else comes back as an ``Answer`` with an
``error``, so a backend's bad reply never reaches the tokenizer inside a tick that steps other sessions too.
"""
from __future__ import annotations

import json
import re
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from ..stream.tokenizer import check_text

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}


def words_to_number(words: list[str]) -> int | None:
    """'forty seven' -> 47, 'one hundred' -> 100, '3293' -> 3293, digit-by-digit 'three two nine' -> 329."""
    if len(words) == 1 and words[0].isdigit():
        return int(words[0])
    if not words:
        return None
    if words == ["one", "hundred"] or words == ["hundred"]:
        return 100
    if len(words) == 1 and words[0] in NUMBER_WORDS:
        return NUMBER_WORDS[words[0]]
    if len(words) == 1 and words[0] in TENS:
        return TENS[words[0]]
    if len(words) == 2 and words[0] in TENS and words[1] in NUMBER_WORDS and 0 < NUMBER_WORDS[words[1]] < 10:
        return TENS[words[0]] + NUMBER_WORDS[words[1]]
    if all(w in NUMBER_WORDS and NUMBER_WORDS[w] < 10 for w in words):
        return int("".join(str(NUMBER_WORDS[w]) for w in words))
    return None


def spoken(n: int) -> str:
    """A result as the agent says it: 0..100 in words, larger numbers digit by digit (the task language)."""
    from ..data.language import number_words

    return number_words(n) if n >= 0 else "minus " + number_words(-n)


class BackendError(RuntimeError):
    pass


class LocalTools:
    """A calculator over English number words or digits ("forty seven times twenty three") and a clock."""

    name = "local"
    OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b,
           "divided": lambda a, b: a // b if b else None}

    def __call__(self, query: str) -> str:
        q = re.sub(r"[^a-z0-9 ]", " ", query.lower()).split()
        q = [w for w in q if w not in ("what", "is", "by", "the")]
        if "time" in q:
            return time.strftime("%H %M")
        for op, fn in self.OPS.items():
            if op in q:
                i = q.index(op)
                a, b = words_to_number(q[:i]), words_to_number(q[i + 1 :])
                if a is None or b is None:
                    break
                r = fn(a, b)
                if r is None:
                    raise BackendError(f"cannot compute {query!r}")
                return spoken(r)
        raise BackendError(f"the calculator does not understand {query!r}")


def _answer_text(reply) -> str:
    """A backend's reply as the text that re-enters the stream; raises ``BackendError`` for anything else."""
    try:
        return check_text(reply)
    except ValueError as e:
        raise BackendError(f"the background's answer: {e}") from None


class OpenAIChat:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (base URL, key and model configurable)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 20.0,
                 system: str = "Answer in a few spoken words. Numbers over one hundred digit by digit."):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key, self.timeout, self.system = model, api_key, timeout, system

    def __call__(self, query: str) -> str:
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": query}]
        body = json.dumps({"model": self.model, "messages": messages}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, body, headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                d = json.loads(r.read())
            content = d["choices"][0]["message"]["content"]
            if isinstance(content, list):  # content parts: their text, in order
                content = "".join(c["text"] for c in content if c.get("type") == "text")
            if not isinstance(content, str):  # null (a refusal, a tool call): there is nothing to say
                raise ValueError(f"the reply's message has no text content ({content!r:.100})")
            return _answer_text(content).strip()
        except Exception as e:  # network, HTTP, JSON shape: all become one clear error
            raise BackendError(f"background endpoint {self.url} failed: {e}") from e


@dataclass
class Pending:
    query: str
    asked: float  # session clock when delegated
    future: Future
    due: float | None = None  # simulated time: the clock time the answer is released at


@dataclass
class Answer:
    query: str
    asked: float
    t: float  # session clock when it re-entered the stream
    text: str | None
    error: str | None = None


@dataclass
class Background:
    """Runs delegations on a thread pool; ``poll(now)`` returns the answers that have arrived by session time now.

    ``delay``: simulated mode, the answer is released ``delay`` s of session clock after the delegation (and not
    before the backend has returned). ``timeout``: seconds of session clock after which a query is given up; in
    simulated time a backend that is due is waited for (wall clock) at most the time-out's rest, once, then given up,
    so a hanging backend stalls the stepping once, never tick after tick. ``close`` gives up every pending query
    (those not started never run) and refuses new ones.
    """

    backend: object = field(default_factory=LocalTools)
    delay: float | None = None
    timeout: float = 30.0
    pool: ThreadPoolExecutor | None = None
    pending: list[Pending] = field(default_factory=list)
    closed: bool = False

    def ask(self, query: str, now: float):
        if self.closed:  # the session has ended: nobody will hear the answer
            return
        pool = self.pool or _shared_pool()
        due = None if self.delay is None else now + self.delay
        self.pending.append(Pending(query, now, pool.submit(self.backend, query), due))

    def poll(self, now: float, wait: bool = False) -> list[Answer]:
        """Answers that arrived by ``now``. ``wait``: in simulated time, block for backends that are due."""
        done, keep = [], []
        for p in self.pending:
            due = p.due is None or now >= p.due
            if p.due is not None and due and wait and not p.future.done():
                # simulated time: wait for the backend, but only until the query would be given up anyway
                futures_wait([p.future], timeout=max(0.0, p.asked + self.timeout - now))
                if not p.future.done():
                    p.future.cancel()
                    done.append(Answer(p.query, p.asked, now, None, f"time-out after {self.timeout:g} s"))
                    continue
            if p.future.done() and due:
                try:
                    done.append(Answer(p.query, p.asked, now, _answer_text(p.future.result())))
                except Exception as e:
                    done.append(Answer(p.query, p.asked, now, None, str(e) or type(e).__name__))
            elif now - p.asked > self.timeout:
                p.future.cancel()
                done.append(Answer(p.query, p.asked, now, None, f"time-out after {self.timeout:g} s"))
            else:
                keep.append(p)
        self.pending = keep
        return done

    def close(self) -> None:
        """Give up every pending query (a backend call not started yet never runs) and refuse new ones."""
        self.closed = True
        for p in self.pending:
            p.future.cancel()
        self.pending = []


_POOL: ThreadPoolExecutor | None = None


def _shared_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(8, thread_name_prefix="background")
    return _POOL
