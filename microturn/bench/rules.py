"""Scoring of scenario rules and the JSON report (``spec/scenarios.md``, "Rules", "Scores", "The report").

    result = evaluate(scenario, agent_words)       # ScenarioResult: passed + one RuleResult per rule
    block = summarize(results, scenarios)          # the "families" object of the report
    obj = report(set_dir, "model", "bundled", results, scenarios)

Readings of the spec chosen here (where it leaves room):

- **Times.** Windows are closed ([a, b] includes both ends) and all comparisons allow 1e-6 s of float slack. A word
  is "under way at t" when ``start < t < end``. Two words are in one run when the gap between the end of the run so
  far and the next start is under 0.5 s.
- **The session's end.** Agent words that start at or after ``duration`` are dropped (the session is over) and word
  ends are cut at ``duration``. ``no_gap`` windows end at ``duration`` at the latest, and the ``no_takeover``
  window length used for backchannels per minute is clipped to the session too.
- **Words.** Agent words whose text normalises to nothing (punctuation) are dropped everywhere. ``say`` and ``count``
  work on the normalised token sequence (one agent word may give several tokens: "72" = "seventy two"); a token's
  time is its word's time split in proportion to token lengths, so the first token starts with the word. The other
  rules (runs, "more than 2 words") count the agent's words as given.
- **say** matches tokens consecutively anywhere in the agent's token sequence (no run needed), so "twenty two" also
  contains "two".
- **Speaking/silent at t** (respond, stop): the agent is speaking at t when t lies strictly inside one of its runs
  (first start to last end), e.g. a word is under way or it is between two words of a run; otherwise it is silent.
  respond reports its latency only when it holds (a first word in [t, t + s]) and the agent was silent at t. stop
  reports its latency whenever the agent was speaking at t, passed or not (0 when no word is under way at t or
  starts in [t, t + s]).
- **count** takes the last number of the whole output. Numbers are parsed inside runs: tens join a following unit
  ("twenty one"), "hundred" joins a preceding 1..99 (or "a") and an optional "and" plus 1..99 after it,
  "thousand"/"million" scale what precedes them; anything else is a number of its own ("one two three" = 1, 2, 3;
  "3293" = 3, 2, 9, 3). The off-by-one accuracy ``obo_pct`` counts count rules whose last number is within 1 of the
  target, whatever the rule's own tolerance; no number is never within.
- **Normalisation.** Digit strings are maximal runs of decimal digits, also inside a word ("mp3" = "mp three");
  those with a leading zero ("007") are read digit by digit. Hyphens are all Unicode dash punctuation; slashes are
  ``/ \\ ⁄ ∕``. Lower-casing and accent stripping are repeated until stable, so normalising is idempotent.
- **Families.** A family that is not one of the spec's is "reported as such, never silently skipped": its scenarios
  are scored like any others, its block comes after the spec's families (in name order), and the report names it in
  ``unknown_families`` (not in the spec, added; empty when there is none).
- **Report figures.** Percentages are rounded to 0.1, times to 0.001 s, p90 uses linear interpolation, backchannels
  per minute are rounded to 0.01 and are null when a family has no no_takeover rule (or their windows sum to 0 s).
  ``pass_pct_by_input`` (instruction families only) has null for a mode without scenarios; beside it (not in the
  spec, added) ``n_by_input`` counts them: ``{"voice": {"passed", "n"}, "typed": {...}}``. Each scenario's rule
  entry carries kind, passed and detail, plus ``latency_s``, ``stop_latency_s``, ``count``, ``count_error`` and
  ``backchannels`` where they apply.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..stream.scenario import FAMILIES, INSTRUCTION_FAMILIES, MANIFEST, Rule, Scenario, input_mode, unknown_families
from ..stream.words import Word

EPS = 1e-6
RUN_GAP = 0.5

# ----------------------------------------------------------------------------------------------- normalisation
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SLASHES = "/\\\u2044\u2215"
_DIGITS = re.compile(r"\d+")


def number_words(n: int) -> str:
    """0..100 in words, as the normalisation writes them: 72 -> "seventy two", 100 -> "one hundred"."""
    if not 0 <= n <= 100:
        raise ValueError(f"number_words covers 0..100, got {n}")
    if n == 100:
        return "one hundred"
    if n < 20:
        return ONES[n]
    tens, unit = divmod(n, 10)
    return TENS[tens] + (f" {ONES[unit]}" if unit else "")


def _digits_to_words(digits: str) -> str:
    """A digit string in words: 0..100 as a number, anything longer (or with a leading zero) digit by digit."""
    if len(digits) > 3 or (len(digits) > 1 and int(digits[0]) == 0) or int(digits) > 100:
        return " ".join(ONES[int(c)] for c in digits)
    return number_words(int(digits))


def _fold(text: str) -> str:
    """Lower case and strip accents (NFKD, combining marks dropped), until nothing changes."""
    for _ in range(8):
        folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                         if not unicodedata.category(c).startswith("M"))
        if folded == text:
            break
        text = folded
    return text


def normalize(text: str) -> list[str]:
    """The spec's normalisation, as a list of tokens: "Twenty-one, can't 72!" -> twenty one cant seventy two."""
    return list(_normalize(text))


@functools.lru_cache(maxsize=1 << 16)
def _normalize(text: str) -> tuple[str, ...]:
    chars = []
    for c in _fold(text):
        if c.isspace() or c in _SLASHES or unicodedata.category(c) == "Pd":
            chars.append(" ")
        elif c.isalpha() or c.isdecimal():
            chars.append(c)
    spelled = _DIGITS.sub(lambda m: f" {_digits_to_words(m.group())} ", "".join(chars))
    return tuple(spelled.split())


# ----------------------------------------------------------------------------------------------- numbers
_UNITS = {w: i for i, w in enumerate(ONES[:10])}
_TEENS = {w: i for i, w in enumerate(ONES) if i >= 10}
_TENS = {w: 10 * i for i, w in enumerate(TENS) if w}
_SCALES = {"thousand": 1_000, "million": 1_000_000}


def _below_hundred(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """0..99 at toks[i]: a unit, a teen, or tens with an optional unit 1..9. Returns (value, next index)."""
    w = toks[i]
    if w in _TENS:
        if i + 1 < len(toks) and _UNITS.get(toks[i + 1], 0) > 0:
            return _TENS[w] + _UNITS[toks[i + 1]], i + 2
        return _TENS[w], i + 1
    if w in _TEENS:
        return _TEENS[w], i + 1
    if w in _UNITS:
        return _UNITS[w], i + 1
    return None


def _below_thousand(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """0..9999 at toks[i]: [1..99 | "a"] "hundred" ["and" 1..99], or 0..99."""
    n = len(toks)
    if toks[i] == "a" and i + 1 < n and (toks[i + 1] == "hundred" or toks[i + 1] in _SCALES):
        v, j = 1, i + 1
    else:
        r = _below_hundred(toks, i)
        if r is None:
            return None
        v, j = r
    if j < n and toks[j] == "hundred" and v >= 1:
        v, j = v * 100, j + 1
        k = j + 1 if j < n and toks[j] == "and" else j
        r = _below_hundred(toks, k) if k < n else None
        if r is not None and r[0] > 0:
            v, j = v + r[0], r[1]
    return v, j


def _number(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """One English number at toks[i] (with thousand/million scales). Returns (value, next index) or None."""
    r = _below_thousand(toks, i)
    if r is None:
        return None
    v, j = r
    total, last_scale = 0, math.inf
    while j < len(toks) and toks[j] in _SCALES and _SCALES[toks[j]] < last_scale and v > 0:
        last_scale = _SCALES[toks[j]]
        total, j = total + v * last_scale, j + 1
        k = j + 1 if j < len(toks) and toks[j] == "and" else j
        r = _below_thousand(toks, k) if k < len(toks) else None
        if r is None or r[0] == 0:
            v = 0
            break
        v, j = r
    return total + v, j


def parse_numbers(words_in_run: Iterable[str | Word]) -> list[int]:
    """The numbers said in one run, in order: ["twenty", "one"] -> [21]; ["one", "two", "three"] -> [1, 2, 3].

    Items are strings or Words; each is normalised first, so "72" and "twenty-one" work.
    """
    toks = [t for w in words_in_run for t in normalize(w.w if isinstance(w, Word) else w)]
    out, i = [], 0
    while i < len(toks):
        r = _number(toks, i)
        if r is None:
            i += 1
        else:
            out.append(r[0])
            i = r[1]
    return out


# ----------------------------------------------------------------------------------------------- words, runs, tokens
@dataclass(frozen=True)
class Token:
    """One normalised token of an agent word, with its share of the word's time."""

    text: str
    start: float
    end: float


def in_session(window: tuple[float, float], duration: float = math.inf) -> tuple[float, float]:
    """A rule's window cut to the session, [0, duration] (empty, a == b, when it lies outside)."""
    a = min(max(window[0], 0.0), duration)
    return a, max(a, min(window[1], duration))


def prepare(words: Iterable[Word], duration: float = math.inf) -> list[Word]:
    """The agent's words as the rules see them: sorted, non-empty after normalisation, cut at the session's end."""
    out = []
    for w in words:
        if w.start >= duration - EPS or not normalize(w.w):
            continue
        out.append(w if w.end <= duration else Word(w.w, w.start, duration, w.speaker))
    return sorted(out, key=lambda w: (w.start, w.end))


def runs(words: Iterable[Word], gap: float = RUN_GAP) -> list[list[Word]]:
    """Maximal sequences of words whose gaps (end of the run so far to the next start) are under ``gap``."""
    out: list[list[Word]] = []
    end = -math.inf
    for w in sorted(words, key=lambda w: (w.start, w.end)):
        if out and w.start - end < gap - EPS:
            out[-1].append(w)
        else:
            out.append([w])
            end = -math.inf
        end = max(end, w.end)
    return out


def tokens(words: Iterable[Word]) -> list[Token]:
    """Normalised tokens of the words in time order; a word's time is split in proportion to token lengths."""
    out = []
    for w in sorted(words, key=lambda w: (w.start, w.end)):
        toks = normalize(w.w)
        total, t = sum(len(x) for x in toks), w.start
        for x in toks:
            dt = (w.end - w.start) * len(x) / total
            out.append(Token(x, t, t + dt))
            t += dt
    return out


def _in(t: float, a: float, b: float) -> bool:
    return a - EPS <= t <= b + EPS


def under_way(w: Word, t: float) -> bool:
    """A word is under way at t when it starts before t and ends after t."""
    return w.start < t - EPS and w.end > t + EPS


def speaking_at(words: Sequence[Word], t: float) -> bool:
    """Whether t lies strictly inside one of the agent's runs (a word under way, or between words of a run)."""
    return any(r[0].start < t - EPS and max(w.end for w in r) > t + EPS for r in runs(words))


def _quote(words: Sequence[Word], limit: int = 3) -> str:
    s = ", ".join(f"'{w.w}' at {w.start:.2f} s" for w in words[:limit])
    return s + (f" (+{len(words) - limit} more)" if len(words) > limit else "")


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule, with the figures the report summarises."""

    kind: str
    passed: bool
    detail: str
    latency: float | None = None
    stop_latency: float | None = None
    count_error: int | None = None
    count: int | None = None
    backchannels: int = 0
    window_s: float = 0.0

    def to_json(self) -> dict:
        d = {"kind": self.kind, "passed": self.passed, "detail": self.detail}
        if self.latency is not None:
            d["latency_s"] = round(self.latency, 3)
        if self.stop_latency is not None:
            d["stop_latency_s"] = round(self.stop_latency, 3)
        if self.kind == "count":
            d["count"], d["count_error"] = self.count, self.count_error
        if self.kind == "no_takeover":
            d["backchannels"] = self.backchannels
        return d


@dataclass(frozen=True)
class ScenarioResult:
    id: str
    family: str
    passed: bool
    rules: list[RuleResult] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "family": self.family, "passed": self.passed,
                "rules": [r.to_json() for r in self.rules]}


# ----------------------------------------------------------------------------------------------- one function per kind
def check_say(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """The words of ``text`` (any alternative) said consecutively, the first starting in the window."""
    (a, b), toks = rule.window, tokens(prepare(words, duration))
    seq = [t.text for t in toks]
    said_elsewhere = []
    for alt in rule.alternatives:
        want = normalize(alt)
        starts = [toks[i].start for i in range(len(seq) - len(want) + 1) if seq[i:i + len(want)] == want]
        hit = next((s for s in starts if _in(s, a, b)), None)
        if hit is not None:
            return RuleResult("say", True, f"{' '.join(want)} at {hit:.2f} s", window_s=b - a)
        said_elsewhere += [f"'{' '.join(want)}' at {s:.2f} s" for s in starts]
    wanted = " / ".join(f"'{' '.join(normalize(x))}'" for x in rule.alternatives)
    where = f"; said {', '.join(said_elsewhere[:3])}" if said_elsewhere else "; never said"
    return RuleResult("say", False, f"{wanted} not started in [{a:.2f}, {b:.2f}] s{where}", window_s=b - a)


def check_silent(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """No agent word starts in the window."""
    a, b = rule.window
    bad = [w for w in prepare(words, duration) if _in(w.start, a, b)]
    detail = f"silent in [{a:.2f}, {b:.2f}] s" if not bad else f"spoke in [{a:.2f}, {b:.2f}] s: {_quote(bad)}"
    return RuleResult("silent", not bad, detail, window_s=b - a)


def check_respond(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """The agent starts a word in [t, t + s]; latency reported when it was silent at t."""
    t, s = rule.after, rule.within
    words = prepare(words, duration)
    first = next((w for w in words if _in(w.start, t, t + s)), None)
    if first is None:
        later = next((w for w in words if w.start > t + s), None)
        tail = f"; next word '{later.w}' at {later.start:.2f} s" if later else ""
        return RuleResult("respond", False, f"no word started in [{t:.2f}, {t + s:.2f}] s{tail}", window_s=s)
    if speaking_at(words, t):
        return RuleResult("respond", True, f"'{first.w}' at {first.start:.2f} s (already speaking at {t:.2f} s)",
                          window_s=s)
    latency = max(0.0, first.start - t)
    return RuleResult("respond", True, f"'{first.w}' at {first.start:.2f} s (latency {latency:.2f} s)",
                      latency=latency, window_s=s)


def check_stop(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """Every word under way at t or starting in [t, t + s] ends by t + s; stop latency when speaking at t."""
    t, s = rule.after, rule.within
    words = prepare(words, duration)
    such = [w for w in words if under_way(w, t) or _in(w.start, t, t + s)]
    late = [w for w in such if w.end > t + s + EPS]
    latency = max([w.end - t for w in such], default=0.0) if speaking_at(words, t) else None
    if late:
        detail = f"still speaking after {t + s:.2f} s: " + ", ".join(f"'{w.w}' ends at {w.end:.2f} s" for w in late[:3])
    elif latency is not None:
        detail = f"stopped {latency:.2f} s after {t:.2f} s"
    else:
        detail = f"not speaking at {t:.2f} s" + (f"; words end by {t + s:.2f} s" if such else "")
    return RuleResult("stop", not late, detail, stop_latency=latency, window_s=s)


def check_continue(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """The agent has a word starting in the window."""
    a, b = rule.window
    hit = next((w for w in prepare(words, duration) if _in(w.start, a, b)), None)
    detail = f"'{hit.w}' at {hit.start:.2f} s" if hit else f"no word started in [{a:.2f}, {b:.2f}] s"
    return RuleResult("continue", hit is not None, detail, window_s=b - a)


def check_no_gap(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """No silence longer than ``gap`` in [a, b] (window cut at the session's end), counting words under way at
    a or b: between a and the first word, between words, between the last word and b."""
    a, b = in_session(rule.window, duration)
    inside = [w for w in prepare(words, duration) if under_way(w, a) or under_way(w, b) or _in(w.start, a, b)]
    cursor, worst, worst_at = a, 0.0, a
    for w in inside:
        if w.start - cursor > worst:
            worst, worst_at = w.start - cursor, cursor
        cursor = max(cursor, w.end)
    if b - cursor > worst:
        worst, worst_at = b - cursor, cursor
    ok = worst <= rule.gap + EPS
    detail = (f"longest silence {worst:.2f} s from {worst_at:.2f} s" + ("" if ok else f" (> {rule.gap:.2f} s)"))
    return RuleResult("no_gap", ok, detail, window_s=b - a)


def check_no_takeover(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """The words starting in the window, grouped into runs: no run spans 1 s or more or holds more than 2 words.
    Every run that passes is a backchannel."""
    a, b = rule.window
    groups = runs([w for w in prepare(words, duration) if _in(w.start, a, b)])
    bad = [r for r in groups if max(w.end for w in r) - r[0].start >= 1.0 - EPS or len(r) > 2]
    lo, hi = in_session(rule.window, duration)
    window = hi - lo
    if bad:
        r = bad[0]
        detail = (f"took the turn at {r[0].start:.2f} s: {len(r)} words over "
                  f"{max(w.end for w in r) - r[0].start:.2f} s ('{' '.join(w.w for w in r[:6])}')")
    else:
        detail = f"{len(groups)} backchannel(s) in [{a:.2f}, {b:.2f}] s"
    return RuleResult("no_takeover", not bad, detail, backchannels=len(groups) - len(bad), window_s=window)


def check_count(rule: Rule, words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    """The last number the agent says is within ``tolerance`` of ``target``; no number is an error of target."""
    n, k = rule.target, rule.tolerance
    numbers = [x for r in runs(prepare(words, duration)) for x in parse_numbers(r)]
    if not numbers:
        return RuleResult("count", False, f"no number said (target {n})", count_error=n)
    last = numbers[-1]
    err = abs(last - n)
    return RuleResult("count", err <= k + EPS, f"last number {last} (target {n}, tolerance {k:g})",
                      count_error=err, count=last)


CHECKS = {"say": check_say, "silent": check_silent, "respond": check_respond, "stop": check_stop,
          "continue": check_continue, "no_gap": check_no_gap, "no_takeover": check_no_takeover, "count": check_count}


def evaluate_rule(rule: Rule, agent_words: Iterable[Word], duration: float = math.inf) -> RuleResult:
    return CHECKS[rule.kind](rule, agent_words, duration)


def evaluate(scenario: Scenario, agent_words: Iterable[Word]) -> ScenarioResult:
    """Score one scenario: it passes when every rule holds. ``agent_words``: what the agent said (speaker unchecked)."""
    words = prepare(agent_words, scenario.duration)
    results = [evaluate_rule(r, words, scenario.duration) for r in scenario.expect]
    return ScenarioResult(scenario.id, scenario.family, all(r.passed for r in results), results)


# ----------------------------------------------------------------------------------------------- scores
def _pct(k: int, n: int) -> float | None:
    return round(100.0 * k / n, 1) if n else None


def _dist(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": round(float(np.median(values)), 3), "p90": round(float(np.percentile(values, 90)), 3)}


def _rules(results: Sequence[ScenarioResult], kind: str) -> list[RuleResult]:
    return [r for res in results for r in res.rules if r.kind == kind]


def family_block(family: str, results: Sequence[ScenarioResult], scenarios: dict[str, Scenario],
                 hear: Callable[[Scenario], float | None] | None = None) -> dict:
    """One entry of the report's "families" object. ``hear``: where a scenario without word timings has its first
    speech (:func:`input_mode`; the bench's is ``run.first_speech``)."""
    n, passed = len(results), sum(r.passed for r in results)
    counts, takeovers = _rules(results, "count"), _rules(results, "no_takeover")
    minutes = sum(r.window_s for r in takeovers) / 60.0
    block = {
        "n": n, "passed": passed, "pass_pct": _pct(passed, n),
        "latency_s": _dist([r.latency for r in _rules(results, "respond") if r.latency is not None]),
        "stop_latency_s": _dist([r.stop_latency for r in _rules(results, "stop") if r.stop_latency is not None]),
        "count": None if not counts else {
            "obo_pct": _pct(sum(r.count is not None and r.count_error <= 1 for r in counts), len(counts)),
            "mae": round(sum(r.count_error for r in counts) / len(counts), 3)},
        "backchannels_per_min": round(sum(r.backchannels for r in takeovers) / minutes, 2) if minutes > 0 else None,
    }
    if family in INSTRUCTION_FAMILIES:
        by_mode = defaultdict(list)
        for r in results:
            by_mode[input_mode(scenarios[r.id], hear)].append(r.passed)
        block["pass_pct_by_input"] = {m: _pct(sum(by_mode[m]), len(by_mode[m])) for m in ("voice", "typed")}
        block["n_by_input"] = {m: {"passed": sum(by_mode[m]), "n": len(by_mode[m])} for m in ("voice", "typed")}
    return block


def family_label(family: str) -> str:
    """A family's name in a table: one not in the spec says so."""
    return family if family in FAMILIES else f"{family} (unknown family)"


def summarize(results: Sequence[ScenarioResult], scenarios: Sequence[Scenario],
              hear: Callable[[Scenario], float | None] | None = None) -> dict:
    """The report's "families" object: one block per family that has results, in the spec's family order, then
    families not in the spec in name order."""
    by_id = {s.id: s for s in scenarios}
    missing = [r.id for r in results if r.id not in by_id]
    if missing:
        raise ValueError(f"results for scenarios not in the set: {', '.join(missing[:5])}")
    groups = defaultdict(list)
    for r in results:
        groups[r.family].append(r)
    order = [f for f in FAMILIES if f in groups] + sorted(f for f in groups if f not in FAMILIES)
    return {f: family_block(f, groups[f], by_id, hear) for f in order}


def report(set_dir: str | Path, agent: str, checkpoint: str | None, results: Sequence[ScenarioResult],
           scenarios: Sequence[Scenario], created: datetime | None = None,
           hear: Callable[[Scenario], float | None] | None = None) -> dict:
    """The full JSON report object of the spec."""
    created = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    manifest = Path(set_dir) / MANIFEST
    return {
        "set": str(set_dir),
        # which set exactly: two sets of one name (another seed, say) must not be paired (``microturn compare``)
        "set_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None,
        "agent": agent, "checkpoint": checkpoint,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "overall_pass_pct": _pct(sum(r.passed for r in results), len(results)),
        "families": summarize(results, scenarios, hear),
        # families of the set that are not the spec's: scored and reported like the rest, under their own names
        "unknown_families": sorted(unknown_families(scenarios)),
        "scenarios": [r.to_json() for r in results],
    }
