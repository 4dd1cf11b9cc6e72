"""Why a checkpoint fails the delegate family: runs it over the delegate scenarios of scenario sets and sorts each
one into what went wrong first.

- ``passed``: the rules pass;
- ``no delegation``: the model never asked the background model;
- ``misheard``: it asked something other than the user's question (the question as the scenario's words or typed
  text have it), so the background model's answer, though right for what was asked, is not the one expected;
- ``recital``: it asked the right question and got the expected answer, but did not say it (or not in time).

A ``misheard`` line shows which of the question's words (two numbers and an operator) the query got wrong, so the
report tells listening (numbers heard wrong) from acting (the answer held but not said).

    python scripts/delegate_report.py microturn/assets/model sets/val sets/val-b sets/val-c sets/val-d sets/val-e

Session 25, the bundled model (runs/s30 step 300, float16, threshold 0.6) on those five sets: 10 of 30 passed,
17 misheard, 3 recital, 0 no delegation. By how the question came (session 26): asked by voice 19, of which 2
passed and 17 misheard; typed 11, of which 8 passed and 3 recitals.

Session 61: on sets/val-del, 120 delegations of their own (`microturn synth --out sets/val-del --per-family 120
--families delegate --split val --seed 61`), the bundled model (threshold 0.5) passed 80: asked by voice 61, passed
31, misheard 27; and the spoken questions it passed, by how many of their two numbers are said in one word (two to
twenty, the round tens, which it hears as compounds: "eighteen" as "eighty", "six" as "sixty four"): none 22 of 33,
one 9 of 23, both 0 of 5 (as this script counts them in session 62).
"""
import argparse
import collections
import json
import re
from pathlib import Path

from microturn.bench.run import bench, first_speech, select
from microturn.data import language as lang
from microturn.data.world import SHORT_NUMBERS
from microturn.stream.scenario import input_mode, read_set

MATH = {*lang.NUMBER_WORDS, "times", "plus"}
ONE_WORD = {lang.number_words(n) for n in SHORT_NUMBERS}


def asked(scenario) -> str:
    """The user's arithmetic question, in the words the background model is asked ("fifty four times forty one"):
    the first run of number and operator words, spoken or typed."""
    spoken = [w.w for w in scenario.words if w.speaker == "user"]
    typed = [w for e in scenario.text for w in e.text.split()]
    for words in (spoken, typed):
        text = " ".join(re.sub(r"[^a-z]", "", w.lower()) for w in words)
        run = re.search(r"(?:\b(?:%s)\b ?)+" % "|".join(sorted(MATH, key=len, reverse=True)), text)
        if run and re.search(r"\b(times|plus)\b", run.group(0)):
            return run.group(0).strip()
    raise ValueError(f"{scenario.id}: no arithmetic question in its words or typed text")


def operands(q: str) -> tuple[str, str, str]:
    """("fifty four", "times", "forty one") from "fifty four times forty one"."""
    m = re.fullmatch(r"(.+) (times|plus) (.+)", q)
    if not m:
        raise ValueError(f"not an arithmetic question: {q!r}")
    return m.group(1), m.group(2), m.group(3)


def one_word_operands(q: str) -> int:
    """How many of the question's two numbers are said in one word (``world.SHORT_NUMBERS``: two to twenty, the
    round tens, those heard wrong as compounds, "sixty" as "sixty four")."""
    first, _, second = operands(q)
    return sum(x in ONE_WORD for x in (first, second))


def wrong_parts(want: str, got: str) -> list[str]:
    """Which of the question's parts the query got wrong: "first number", "operator", "second number"."""
    try:
        g = operands(got)
    except ValueError:
        return ["the whole question"]
    names = ("first number", "operator", "second number")
    return [n for n, a, b in zip(names, operands(want), g) if a != b]


def classify(scenario, entry: dict) -> tuple[str, str, list[str]]:
    """(kind, detail, the question's parts the query got wrong) for one scenario and its traced bench entry."""
    events = entry["output"]["events"]
    query = next((e["text"] for e in events if e["kind"] == "delegate"), None)
    answer = next((e["text"] for e in events if e["kind"] == "answer"), None)
    said = " ".join(w[0] for w in entry["output"]["words"])
    want = asked(scenario)
    if entry["passed"]:
        return "passed", f"asked {query!r}", []
    if query is None:
        return "no delegation", f"question {want!r}; said {said!r}", []
    if query != want:
        wrong = wrong_parts(want, query)
        return "misheard", f"question {want!r}, asked {query!r} ({', '.join(wrong)}); said {said!r}", wrong
    return "recital", f"asked {query!r}, answer {answer!r}; said {said!r}", []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("sets", nargs="+", help="format-v1 scenario set folders")
    ap.add_argument("--speak-threshold", type=float, default=None, help="default: the checkpoint's own")
    ap.add_argument("--json", help="write every scenario's kind and detail here")
    a = ap.parse_args()
    opts = {} if a.speak_threshold is None else {"speak_threshold": a.speak_threshold}
    kinds, parts, rows = collections.Counter(), collections.Counter(), []
    by_input = collections.Counter()  # (voice or typed, kind)
    by_short = collections.Counter()  # (voice or typed, one-word operands, passed)
    for s in a.sets:
        scenarios = {sc.id: sc for sc in select(read_set(s), ["delegate"])}
        if not scenarios:
            raise SystemExit(f"{s} has no delegate scenarios")
        rep = bench(s, "model", checkpoint=a.checkpoint, families=["delegate"], trace=True, print_table=False, **opts)
        for entry in rep["scenarios"]:
            kind, detail, wrong = classify(scenarios[entry["id"]], entry)
            mode = input_mode(scenarios[entry["id"]], first_speech)  # as the bench's report decides it
            kinds[kind] += 1
            by_input[mode, kind] += 1
            parts.update(wrong)
            by_short[mode, one_word_operands(asked(scenarios[entry["id"]])), kind == "passed"] += 1
            rows.append({"set": s, "id": entry["id"], "input": mode, "kind": kind, "detail": detail})
            print(f"{s:14} {entry['id']:16} {mode:6} {kind:14} {detail}", flush=True)
    n = sum(kinds.values())
    print(f"\n{n} delegate scenarios: " + ", ".join(f"{k} {kinds[k]}" for k in
                                                  ("passed", "misheard", "recital", "no delegation")))
    for mode in ("voice", "typed"):
        n_mode = sum(v for (m, _), v in by_input.items() if m == mode)
        if n_mode:
            print(f"asked by {mode}: {n_mode}, " + ", ".join(f"{k} {by_input[mode, k]}" for k in
                                                             ("passed", "misheard", "recital", "no delegation")))
            print("  passed, by the numbers said in one word: " + ", ".join(
                f"{k}: {by_short[mode, k, True]} of {by_short[mode, k, True] + by_short[mode, k, False]}"
                for k in range(3) if by_short[mode, k, True] + by_short[mode, k, False]))
    if parts:
        print("misheard parts: " + ", ".join(f"{k} {v}" for k, v in parts.most_common()))
    if a.json:
        Path(a.json).write_text(json.dumps({"counts": kinds, "misheard_parts": parts, "scenarios": rows}, indent=1)
                                + "\n")


if __name__ == "__main__":
    main()
