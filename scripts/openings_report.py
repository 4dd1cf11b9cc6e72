"""Which openings a checkpoint fails: a scenario set's scenarios grouped by the user's first words, with how many of
each group every bench report given fails.

Session 66 found all 14 of the bundled model's backchannel failures in sets/gap in monologues that open with the
held-out "I keep remembering {topic}." (taken for a request); this counts such failures for any set and report:

    python scripts/openings_report.py sets/gap out/gap/assets.json out/gap/o67-backchannel.json \
        --family backchannel --words 3

prints, per opening (its first ``--words`` words, lower case, punctuation dropped) that some report fails, the
scenarios that open so and each report's failures among them, the openings most failed by the first report first,
then each report's total. A report of another set (a scenario it lacks, or one the set lacks) is refused by name.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

from microturn.stream.scenario import read_set


def opening(words, n: int) -> str:
    """The first ``n`` words the user says, lower case, without punctuation."""
    said = [w.w.strip(".,?!").lower() for w in words if w.speaker == "user"]
    return " ".join(said[:n])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set", help="a scenario set folder (microturn synth's)")
    ap.add_argument("reports", nargs="+", help="microturn bench --json reports of that set")
    ap.add_argument("--family", help="only this family's scenarios (default: every family the reports scored)")
    ap.add_argument("--words", type=int, default=3, help="how many first words make an opening (default 3)")
    a = ap.parse_args(argv)
    if a.words < 1:
        raise SystemExit(f"--words must be at least 1, got {a.words}")
    scenarios = {s.id: s for s in read_set(a.set) if a.family is None or s.family == a.family}
    if not scenarios:
        raise SystemExit(f"{a.set} has no {a.family} scenarios")
    passed = []
    for path in a.reports:
        try:
            rows = json.loads(Path(path).read_text())["scenarios"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}: not a bench report ({e})") from None
        got = {r["id"]: bool(r["passed"]) for r in rows if a.family is None or r.get("family") == a.family}
        if unknown := sorted(set(got) - set(scenarios)):
            raise SystemExit(f"{path}: scenario {unknown[0]} is not in {a.set}: a report of another set")
        if a.family is not None and (missing := sorted(set(scenarios) - set(got))):
            raise SystemExit(f"{path}: no result for {missing[0]} of {a.set}'s {a.family} scenarios")
        passed.append(got)
    scored = set.intersection(*(set(p) for p in passed))
    groups = Counter(opening(scenarios[i].words, a.words) for i in scored)
    failed = [Counter(opening(scenarios[i].words, a.words) for i in scored if not p[i]) for p in passed]
    names = [Path(p).stem for p in a.reports]
    width, cols = max([len(k) for k in groups] + [7]), [max(len(n), 4) for n in names]

    def row(key, n, counts):
        print(f"{key:{width}s}  {n:>4}  " + "  ".join(f"{c:>{w}}" for c, w in zip(counts, cols)))

    row("opening", "n", names)
    for key in sorted(groups, key=lambda k: (-failed[0][k], -groups[k], k)):
        if any(f[key] for f in failed):
            row(key, groups[key], [f[key] for f in failed])
    row("failed", len(scored), [sum(f.values()) for f in failed])


if __name__ == "__main__":
    main()
