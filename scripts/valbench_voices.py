"""Validation results split by the user's voice engine: how much of what a checkpoint fails is the held-out voices.

The five validation sets (``scripts/valbench.sh``) speak with the validation split's voices: held-out espeak-ng
voices, and flite's held-out voice awb, about three scenarios in ten. A scenario file does not name its voice, so
this script draws each scenario's session again (``world.generate``, deterministic for the set's seed; about 30 s
the first time, then kept in out/valbench/voices-SET.json) and counts the passes of valbench's reports by engine,
overall and per family:

    python scripts/valbench_voices.py bundled-s30-300-0.6

(the argument: the NAME-THRESHOLD of ``out/valbench/NAME-THRESHOLD-SET.json``). Session 30 found the bundled model
passing 213 of 254 espeak-ng scenarios and 75 of 106 flite ones, the families that need the words heard most apart
(cuespeak 12 of 19 against 4 of 11, translate 16 of 20 against 3 of 10); ``scripts/voices_report.py`` gives the
reason, the listening head names 77 % of held-out espeak-ng voices' task-word tokens right and 48 % of awb's.
"""
import argparse
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from microturn.data.world import generate

SEEDS = {"val": 7, "val-b": 8, "val-c": 9, "val-d": 40, "val-e": 41}  # as scripts/valbench.sh makes them
OUT = Path("out/valbench")


def _voice(job: tuple[str, int, int]) -> str:
    family, seed, index = job
    return generate(family, seed, "val", 1.0, index).timeline.meta.get("voice") or "none"


def voices(name: str) -> dict[str, str]:
    """Scenario id -> voice id for validation set ``name`` (cached in out/valbench/voices-NAME.json)."""
    cache = OUT / f"voices-{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ids = [json.loads(line)["id"] for line in open(f"sets/{name}/manifest.jsonl")]
    jobs = [(i.rsplit("-", 1)[0], SEEDS[name], int(i.rsplit("-", 1)[1])) for i in ids]
    with ProcessPoolExecutor(2) as pool:
        found = dict(zip(ids, pool.map(_voice, jobs, chunksize=8)))
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(found))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME-THRESHOLD of out/valbench/NAME-THRESHOLD-SET.json")
    a = ap.parse_args()
    for run in a.runs:
        passed, total = Counter(), Counter()
        for name in SEEDS:
            report = OUT / f"{run}-{name}.json"
            if not report.exists():
                raise SystemExit(f"no {report}: run scripts/valbench.sh first")
            by_id = voices(name)
            for s in json.loads(report.read_text())["scenarios"]:
                engine = by_id[s["id"]].split(":")[0]
                for key in (engine, (s["family"], engine)):
                    passed[key] += bool(s["passed"])
                    total[key] += 1
        engines = sorted(k for k in total if isinstance(k, str))
        print(f"{run}: " + ", ".join(f"{e} {passed[e]} of {total[e]}" for e in engines))
        families = sorted({k[0] for k in total if isinstance(k, tuple)})
        for f in families:
            print(f"  {f:<17}" + "  ".join(f"{e} {passed[f, e]:>2}/{total[f, e]:<2}" for e in engines
                                           if total[f, e]))


if __name__ == "__main__":
    main()
