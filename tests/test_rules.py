"""Scoring rules of spec/scenarios.md: normalisation, numbers, every rule kind with its edge cases, the report."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.bench.rules import (RuleResult, ScenarioResult, check_continue, check_count, check_no_gap,
                                   check_no_takeover, check_respond, check_say, check_silent, check_stop, evaluate,
                                   normalize, number_words, parse_numbers, report, runs, summarize)
from microturn.stream.scenario import Rule, Scenario, TextEvent
from microturn.stream.words import Word


def W(*items) -> list[Word]:
    """W(("bingo", 5.2, 5.5), ...) -> agent words."""
    return [Word(w, s, e, "agent") for w, s, e in items]


def say(text, a, b):
    return Rule("say", text=text, window=(a, b))


# ----------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("text,tokens", [
    ("72", ["seventy", "two"]),
    ("3293", ["three", "two", "nine", "three"]),
    ("100", ["one", "hundred"]),
    ("101", ["one", "zero", "one"]),
    ("0", ["zero"]),
    ("twenty-one", ["twenty", "one"]),
    ("can't", ["cant"]),
    ("plátano", ["platano"]),
    ("Río / MONTAÑA", ["rio", "montana"]),
    ("Sorry, I can't help with that.", ["sorry", "i", "cant", "help", "with", "that"]),
    ("It's 7:30!", ["its", "seven", "three", "zero"]),  # ":" is dropped first: "730"
    ("x—y", ["x", "y"]),
    ("", []),
    ("...", []),
])
def test_normalize(text, tokens):
    assert normalize(text) == tokens


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(" ".join(once)) == once
    assert all(t and " " not in t for t in once)


@pytest.mark.parametrize("n", range(101))
def test_number_words_round_trip(n):
    assert parse_numbers(number_words(n).split()) == [n]
    assert parse_numbers([str(n)]) == [n]
    assert normalize(str(n)) == number_words(n).split()


@given(st.integers(101, 10**9))
def test_large_numbers_are_digits(n):
    assert parse_numbers([str(n)]) == [int(c) for c in str(n)]


@pytest.mark.parametrize("words,numbers", [
    (["twenty", "one"], [21]),
    (["twenty-one"], [21]),
    (["one", "two", "three"], [1, 2, 3]),
    (["one", "hundred"], [100]),
    (["a", "hundred", "and", "five"], [105]),
    (["three", "thousand", "two", "hundred"], [3200]),
    (["twenty", "twenty", "one", "twenty", "two"], [20, 21, 22]),
    (["I", "counted", "12", "reps"], [12]),
    (["you", "did", "seventy-two", "and", "then", "one"], [72, 1]),
    (["no", "numbers", "here"], []),
])
def test_parse_numbers(words, numbers):
    assert parse_numbers(words) == numbers


def test_runs_split_at_half_a_second():
    words = W(("a", 0.0, 0.2), ("b", 0.6, 0.8), ("c", 1.3, 1.5), ("d", 1.9, 2.0))
    assert [[w.w for w in r] for r in runs(words)] == [["a", "b"], ["c", "d"]]
    # floats that are 0.5 s apart in decimal count as a gap of 0.5 s, not 0.49999
    assert len(runs(W(("a", 0.3, 0.9), ("b", 1.4, 1.5)))) == 2


# ----------------------------------------------------------------------------------------------- say
def test_say_in_window_and_outside():
    r = check_say(say("bingo", 5.1, 6.3), W(("Bingo!", 5.42, 5.8)))
    assert r.passed and r.detail == "bingo at 5.42 s"
    late = check_say(say("bingo", 5.1, 6.3), W(("bingo", 6.4, 6.8)))
    assert not late.passed and "6.40" in late.detail


def test_say_window_edges_are_inclusive():
    assert check_say(say("go", 1.0, 2.0), W(("go", 1.0, 1.2))).passed
    assert check_say(say("go", 1.0, 2.0), W(("go", 2.0, 2.2))).passed
    assert not check_say(say("go", 1.0, 2.0), W(("go", 0.99, 1.2))).passed


def test_say_straddling_word_counts_by_its_start():
    assert check_say(say("bingo", 5.0, 6.0), W(("bingo", 5.9, 6.5))).passed
    assert not check_say(say("bingo", 5.0, 6.0), W(("bingo", 4.8, 5.3))).passed


def test_say_multiword_consecutive_and_split_tokens():
    rule = say("Sorry, I can't help.", 1.0, 3.0)
    ok = W(("Sorry,", 1.5, 1.8), ("I", 1.9, 2.0), ("can't", 2.0, 2.3), ("help", 2.3, 2.6))
    assert check_say(rule, ok).passed
    broken = W(("Sorry,", 1.5, 1.8), ("I", 1.9, 2.0), ("really", 2.0, 2.2), ("can't", 2.2, 2.4), ("help", 2.4, 2.6))
    assert not check_say(rule, broken).passed
    # one agent word can hold several tokens: "72" = "seventy two", and "twenty-one" matches "twenty one"
    assert check_say(say("seventy two", 3.0, 4.0), W(("72", 3.5, 3.9))).passed
    assert check_say(say("21", 3.0, 4.0), W(("twenty-one", 3.5, 3.9))).passed
    assert check_say(say("tres dos nueve tres", 0, 1), W(("tres", 0.1, 0.2), ("dos", 0.2, 0.3),
                                                         ("nueve", 0.3, 0.4), ("tres", 0.4, 0.5))).passed
    assert check_say(say("3293", 0, 1), W(("three", 0.1, 0.2), ("two", 0.2, 0.3), ("nine", 0.3, 0.4),
                                          ("three", 0.4, 0.5))).passed


def test_say_second_token_of_a_word_starts_later():
    # "72" at [3.0, 4.0]: "seventy" takes the first 7/10 of it, "two" starts at 3.7
    assert not check_say(say("two", 3.0, 3.5), W(("72", 3.0, 4.0))).passed
    assert check_say(say("two", 3.6, 3.8), W(("72", 3.0, 4.0))).passed


def test_say_accents_and_alternatives():
    assert check_say(say("plátano", 0, 2), W(("platano", 1.0, 1.4))).passed
    assert check_say(say("platano", 0, 2), W(("Plátano.", 1.0, 1.4))).passed
    alt = Rule("say", text=("sorry", "I'm sorry"), window=(0.0, 2.0))
    assert check_say(alt, W(("I'm", 1.0, 1.2), ("sorry", 1.2, 1.5))).passed
    assert check_say(alt, W(("sorry", 0.5, 0.9))).passed
    miss = check_say(alt, W(("no", 0.5, 0.9)))
    assert not miss.passed and "'sorry' / 'im sorry'" in miss.detail and "never said" in miss.detail


def test_no_output_at_all():
    sc = Scenario("x", "refusal", 5.0, [say("sorry", 0, 2), Rule("silent", window=(0.0, 5.0)),
                                       Rule("respond", after=1.0, within=1.5), Rule("stop", after=1.0, within=1.0),
                                       Rule("continue", window=(0.0, 1.0)), Rule("no_gap", window=(1.0, 2.0), gap=0.8),
                                       Rule("no_takeover", window=(0.0, 5.0)), Rule("count", target=4, tolerance=1)])
    res = evaluate(sc, [])
    assert [r.passed for r in res.rules] == [False, True, False, True, False, False, True, False]
    assert not res.passed
    assert res.rules[2].latency is None and res.rules[3].stop_latency is None
    assert res.rules[7].count is None and res.rules[7].count_error == 4


# ----------------------------------------------------------------------------------------------- silent, continue
def test_silent_and_continue():
    rule = Rule("silent", window=(2.0, 4.0))
    assert check_silent(rule, W(("a", 1.0, 2.5), ("b", 4.1, 4.5))).passed  # started before / after
    bad = check_silent(rule, W(("hey", 4.0, 4.3)))
    assert not bad.passed and "'hey' at 4.00 s" in bad.detail
    assert check_silent(rule, W(("...", 3.0, 3.2))).passed  # punctuation is not speech
    cont = Rule("continue", window=(2.0, 4.0))
    assert check_continue(cont, W(("a", 3.9, 4.5))).passed
    assert not check_continue(cont, W(("a", 1.0, 5.0))).passed  # under way, but no word starts inside


# ----------------------------------------------------------------------------------------------- respond
def test_respond_latency_when_silent():
    r = check_respond(Rule("respond", after=2.0, within=1.5), W(("Five.", 2.4, 2.8)))
    assert r.passed and r.latency == pytest.approx(0.4)
    late = check_respond(Rule("respond", after=2.0, within=1.5), W(("Five.", 3.6, 3.9)))
    assert not late.passed and late.latency is None and "3.60" in late.detail
    assert check_respond(Rule("respond", after=2.0, within=1.5), W(("x", 3.5, 3.9))).passed  # edge inclusive


def test_respond_no_latency_when_already_speaking():
    talking = W(("and", 1.5, 2.2), ("then", 2.3, 2.6))  # word under way at t
    r = check_respond(Rule("respond", after=2.0, within=1.5), talking)
    assert r.passed and r.latency is None
    between = W(("and", 1.5, 1.9), ("then", 2.1, 2.6))  # between two words of one run
    r = check_respond(Rule("respond", after=2.0, within=1.5), between)
    assert r.passed and r.latency is None
    before = W(("done", 0.5, 1.0), ("five", 2.5, 2.8))  # a run that ended 1 s earlier: silent at t
    assert check_respond(Rule("respond", after=2.0, within=1.5), before).latency == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------- stop
def test_stop_when_speaking():
    rule = Rule("stop", after=5.0, within=1.0)
    quick = W(("one", 4.0, 4.4), ("two", 4.6, 5.3), ("three", 7.0, 7.4))
    r = check_stop(rule, quick)
    assert r.passed and r.stop_latency == pytest.approx(0.3)  # "three" after t + s is left to other rules
    slow = W(("one", 4.0, 4.4), ("two", 4.6, 5.3), ("three", 5.4, 6.2))
    r = check_stop(rule, slow)
    assert not r.passed and r.stop_latency == pytest.approx(1.2) and "'three' ends at 6.20 s" in r.detail
    ends_exactly = W(("two", 4.6, 5.3), ("three", 5.4, 6.0))
    assert check_stop(rule, ends_exactly).passed


def test_stop_when_agent_not_speaking():
    rule = Rule("stop", after=5.0, within=1.0)
    r = check_stop(rule, W(("done", 1.0, 1.5)))
    assert r.passed and r.stop_latency is None
    assert check_stop(rule, []).stop_latency is None
    r = check_stop(rule, W(("sure", 5.5, 5.9)))  # starts a short word after t: holds, no stop latency
    assert r.passed and r.stop_latency is None
    assert not check_stop(rule, W(("okay", 5.5, 6.5))).passed
    # between two words of a run at t and nothing more: stopped at once
    gap = check_stop(rule, W(("one", 4.0, 4.9), ("two", 5.2, 5.3)))
    assert gap.passed and gap.stop_latency == pytest.approx(0.3)
    assert check_stop(rule, W(("one", 4.0, 4.9))).stop_latency is None  # ended before t, 0.1 s: not under way


# ----------------------------------------------------------------------------------------------- no_gap
def test_no_gap():
    rule = Rule("no_gap", window=(2.0, 4.0), gap=0.8)
    steady = W(("a", 1.5, 2.3), ("b", 2.8, 3.4), ("c", 3.9, 4.6))  # under way at both edges
    assert check_no_gap(rule, steady).passed
    late_start = W(("b", 2.9, 3.4), ("c", 3.9, 4.6))  # 0.9 s from a to first word
    r = check_no_gap(rule, late_start)
    assert not r.passed and "0.90" in r.detail
    early_end = W(("a", 1.5, 2.3), ("b", 2.8, 3.1))  # last word ends 0.9 s before b
    assert not check_no_gap(rule, early_end).passed
    middle = W(("a", 1.5, 2.3), ("b", 3.2, 4.2))
    assert not check_no_gap(rule, middle).passed
    one_long = W(("aaaaah", 1.0, 5.0))
    assert check_no_gap(rule, one_long).passed
    assert not check_no_gap(rule, []).passed
    exactly = W(("a", 2.8, 3.2), ("b", 3.2, 4.0))  # 0.8 s from a to first word: not longer than g
    assert check_no_gap(rule, exactly).passed


def test_windows_that_start_before_the_session_are_clipped_at_0():
    """[t - 1, t] written near the start: no silence before 0 counts, nor any time before 0 as window."""
    assert check_no_gap(Rule("no_gap", window=(-0.6, 1.0), gap=0.3), W(("a", 0.0, 1.2))).passed
    assert check_no_gap(Rule("no_gap", window=(-0.6, 1.0), gap=0.3), W(("a", 0.3, 1.2))).passed  # 0.3 s from 0
    assert not check_no_gap(Rule("no_gap", window=(-0.6, 1.0), gap=0.3), W(("a", 0.4, 1.2))).passed
    assert check_no_gap(Rule("no_gap", window=(-2.0, -1.0), gap=0.3), []).passed  # nothing of it is in the session
    assert check_no_takeover(Rule("no_takeover", window=(-1.0, 2.0)), W(("mhm", 0.5, 0.7))).window_s == 2.0


def test_no_gap_word_ending_at_a_is_not_under_way():
    rule = Rule("no_gap", window=(2.0, 3.0), gap=0.5)
    assert not check_no_gap(rule, W(("a", 1.0, 2.0), ("b", 2.6, 3.2))).passed
    assert check_no_gap(rule, W(("a", 1.0, 2.1), ("b", 2.6, 3.2))).passed


# ----------------------------------------------------------------------------------------------- no_takeover
def test_no_takeover_and_backchannels():
    rule = Rule("no_takeover", window=(0.0, 30.0))
    bc = W(("mhm", 2.0, 2.3), ("yeah", 10.0, 10.2), ("okay", 10.3, 10.6))
    r = check_no_takeover(rule, bc)
    assert r.passed and r.backchannels == 2 and r.window_s == 30.0
    three = W(("yes", 5.0, 5.1), ("I", 5.2, 5.3), ("see", 5.4, 5.5))  # more than 2 words in a run
    r = check_no_takeover(rule, three + bc)
    assert not r.passed and r.backchannels == 2
    long = W(("mmmmmhm", 5.0, 6.0))  # spans 1 s
    assert not check_no_takeover(rule, long).passed
    spaced = W(("yes", 5.0, 5.1), ("I", 5.7, 5.8), ("see", 6.4, 6.5))  # three separate runs
    assert check_no_takeover(rule, spaced).backchannels == 3


def test_no_takeover_only_counts_words_starting_inside():
    rule = Rule("no_takeover", window=(5.0, 8.0))
    before = W(("so", 3.0, 3.5), ("the", 3.6, 4.0), ("answer", 4.1, 4.8), ("is", 5.0, 5.3))
    assert check_no_takeover(rule, before).passed  # one word inside: a short run
    straddle = W(("well", 7.5, 7.8), ("you", 7.9, 8.1), ("know", 8.2, 8.6))  # two start inside
    assert check_no_takeover(rule, straddle).passed


# ----------------------------------------------------------------------------------------------- count
def test_count_joined_and_separate_numbers():
    rule = Rule("count", target=21, tolerance=1)
    r = check_count(rule, W(("twenty", 1.0, 1.3), ("one", 1.35, 1.6)))
    assert r.passed and r.count == 21 and r.count_error == 0
    r = check_count(Rule("count", target=3, tolerance=0), W(("one", 1.0, 1.2), ("two", 1.3, 1.5), ("three", 1.6, 1.9)))
    assert r.passed and r.count == 3
    # the same two words in separate runs are two numbers: the last is 1
    r = check_count(rule, W(("twenty", 1.0, 1.3), ("one", 2.0, 2.2)))
    assert not r.passed and r.count == 1 and r.count_error == 20


def test_count_off_by_one_and_digits():
    rule = Rule("count", target=12, tolerance=1)
    assert check_count(rule, W(("You", 9.0, 9.1), ("did", 9.1, 9.3), ("13.", 9.3, 9.6))).passed
    r = check_count(rule, W(("14", 9.0, 9.3)))
    assert not r.passed and r.count_error == 2


def test_count_no_number_is_error_n():
    r = check_count(Rule("count", target=7, tolerance=1), W(("I", 1.0, 1.1), ("lost", 1.2, 1.4), ("track", 1.5, 1.8)))
    assert not r.passed and r.count is None and r.count_error == 7


# ----------------------------------------------------------------------------------------------- session end
def test_windows_at_the_sessions_end():
    sc = Scenario("end", "timespeak", 10.0, [say("bingo", 9.6, 11.0), Rule("no_gap", window=(8.0, 12.0), gap=0.5),
                                            Rule("stop", after=9.5, within=2.0), Rule("silent", window=(9.9, 12.0)),
                                            Rule("no_takeover", window=(8.0, 14.0))])
    agent = W(("go", 8.0, 9.2), ("bingo", 9.6, 10.4), ("late", 10.2, 10.5), ("after", 10.5, 11.0))
    res = evaluate(sc, agent)
    assert [r.passed for r in res.rules] == [True, True, True, True, False]
    assert res.rules[2].stop_latency == pytest.approx(0.5)  # "bingo" is cut at the session's end
    assert res.rules[4].window_s == pytest.approx(2.0)
    # a say window whose only word would start after the end does not pass
    assert not evaluate(Scenario("e2", "timespeak", 10.0, [say("bingo", 9.6, 11.0)]),
                        W(("bingo", 10.1, 10.4))).passed


# ----------------------------------------------------------------------------------------------- scores and report
def _scenario(i, family, rules, typed=False):
    text = [TextEvent(0.2, "In 5 seconds, say bingo.")] if typed else []
    words = [Word("in", 0.5, 0.7)] if not typed else [Word("tiger", 3.0, 3.3)]
    return Scenario(f"s{i}", family, 20.0, rules, text=text, words=words)


def test_summarize_and_report():
    scenarios = [
        _scenario(0, "turn", [Rule("respond", after=1.0, within=1.5)]),
        _scenario(1, "turn", [Rule("respond", after=1.0, within=1.5)]),
        _scenario(2, "turn", [Rule("respond", after=1.0, within=1.5)]),
        _scenario(3, "interrupt", [Rule("stop", after=2.0, within=1.0)]),
        _scenario(4, "repcount", [Rule("count", target=5, tolerance=1)]),
        _scenario(5, "repcount", [Rule("count", target=4, tolerance=1)], typed=True),
        _scenario(6, "backchannel", [Rule("no_takeover", window=(0.0, 30.0))]),
    ]
    agent = {
        "s0": W(("five", 1.2, 1.5)), "s1": W(("five", 1.6, 1.9)), "s2": [],
        "s3": W(("one", 1.5, 2.1), ("two", 2.2, 2.6)),
        "s4": W(("one", 1.0, 1.2), ("two", 2.0, 2.2), ("six", 3.0, 3.2)), "s5": [],
        "s6": W(("mhm", 4.0, 4.2), ("yeah", 9.0, 9.2)),
    }
    results = [evaluate(s, agent[s.id]) for s in scenarios]
    fams = summarize(results, scenarios)
    assert list(fams) == ["turn", "backchannel", "interrupt", "repcount"]  # the spec's family order
    turn = fams["turn"]
    assert (turn["n"], turn["passed"], turn["pass_pct"]) == (3, 2, 66.7)
    assert turn["latency_s"] == {"median": 0.4, "p90": 0.56}
    assert turn["stop_latency_s"] is None and turn["count"] is None and turn["backchannels_per_min"] is None
    assert "pass_pct_by_input" not in turn
    assert fams["interrupt"]["stop_latency_s"] == {"median": 0.6, "p90": 0.6}
    rep = fams["repcount"]
    assert rep["count"] == {"obo_pct": 50.0, "mae": 2.5}  # |6 - 5| = 1, no number for target 4 = 4
    assert rep["pass_pct_by_input"] == {"voice": 100.0, "typed": 0.0}
    assert rep["n_by_input"] == {"voice": {"passed": 1, "n": 1}, "typed": {"passed": 0, "n": 1}}
    assert fams["backchannel"]["backchannels_per_min"] == 6.0  # 2 in the window, cut to the 20 s session
    created = datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc)
    rep_obj = report("sets/dev", "model", "bundled", results, scenarios, created=created)
    assert rep_obj["created"] == "2026-11-24T17:00:00Z"
    assert rep_obj["overall_pass_pct"] == round(100 * 5 / 7, 1)
    assert rep_obj["set"] == "sets/dev" and rep_obj["checkpoint"] == "bundled"
    assert rep_obj["scenarios"][0] == {"id": "s0", "family": "turn", "passed": True, "rules": [
        {"kind": "respond", "passed": True, "detail": "'five' at 1.20 s (latency 0.20 s)", "latency_s": 0.2}]}
    json.dumps(rep_obj)  # JSON-serialisable
    assert report("d", "m", None, [], [])["overall_pass_pct"] is None


def test_summarize_rejects_unknown_result():
    with pytest.raises(ValueError, match="x"):
        summarize([ScenarioResult("x", "turn", True, [RuleResult("silent", True, "ok")])], [])
