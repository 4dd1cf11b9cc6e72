"""Which validation scenarios every checkpoint given fails: the failures no run of a recipe moves, apart from the
ones that come and go with the run (a few either way between any two checkpoints of a lineage, `microturn compare`).

Reads the reports `scripts/valbench.sh` wrote for each NAME at the threshold given (out/valbench/NAME-THR-SET.json
on the five sets; the joe set is left out, as in valbench's count) and prints how many scenarios k of the N
checkpoints fail, for each k, then those all N fail by family, each with its first failed rule as the first NAME's
report gives it.

    python scripts/shared_failures.py assets g49 h52 --threshold 0.5
"""
import argparse
import collections
import json
from pathlib import Path

from microturn.bench.compare import paired

SETS = ("val", "val-b", "val-c", "val-d", "val-e")  # scripts/valbench.sh's five


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="checkpoint names as valbench wrote them (a checkpoint folder's parent)")
    ap.add_argument("--threshold", default="0.5", help="the speak threshold in the reports' names")
    ap.add_argument("--reports", default="out/valbench", help="the folder valbench wrote its reports to")
    a = ap.parse_args()
    if len(a.names) < 2:
        raise SystemExit("give two or more checkpoint names")
    if len(set(a.names)) < len(a.names):
        raise SystemExit("a checkpoint name is given twice")
    sides = {name: [str(Path(a.reports) / f"{name}-{a.threshold}-{s}.json") for s in SETS] for name in a.names}
    for name, paths in sides.items():
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise SystemExit(f"{name}: no report {missing[0]} (run scripts/valbench.sh on it at {a.threshold})")
    try:
        runs = paired(sides)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    n = len(runs)
    failed = {key: sum(not r[key][1] for r in runs) for key in runs[0]}
    hist = collections.Counter(failed.values())
    print(f"{len(failed)} scenarios, {n} checkpoints ({', '.join(a.names)}); failed by k of them:")
    print("  " + ", ".join(f"k={k}: {hist[k]}" for k in range(1, n + 1)))
    every = sorted(key for key, k in failed.items() if k == n)
    by_family = collections.Counter(runs[0][key][0] for key in every)
    print(f"failed by all {n}: {len(every)} ({', '.join(f'{f} {c}' for f, c in by_family.most_common())})")
    first = {}
    for s in SETS:
        rep = json.loads((Path(a.reports) / f"{a.names[0]}-{a.threshold}-{s}.json").read_text())
        for sc in rep["scenarios"]:
            bad = [r["detail"] for r in sc["rules"] if not r["passed"]]
            first[(Path(rep["set"]).name, sc["id"])] = bad[0] if bad else ""
    for key in every:
        print(f"  {key[0]} {key[1]}: {first.get(key, '')[:110]}")


if __name__ == "__main__":
    main()
