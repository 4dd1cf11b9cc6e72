"""Validation results split by the user's voice engine: how much of what a checkpoint fails is the held-out voices.

The five validation sets (``scripts/valbench.sh``) speak with the validation split's voices: held-out espeak-ng
voices, and flite's held-out voice awb, about three scenarios in ten. A scenario file does not name its voice, so
this script draws each scenario's session again (``world.generate``, deterministic for the set's seed; about 30 s
the first time, then kept in out/valbench/voices-SET.json) and counts the passes of valbench's reports by engine,
overall and per family:

    python scripts/valbench_voices.py bundled-s30-300-0.6

(the argument: the NAME-THRESHOLD of ``out/valbench/NAME-THRESHOLD-SET.json``). Any other set written by ``microturn
synth`` (scenarios, not shards) is split the same way from one bench report, given the set's seed and split:

    python scripts/valbench_voices.py --report out/turn-val.json --seed 902 --split val

(every session of that set is drawn again, about 0.1 s each; nothing is cached; where the set's folder is still
there, a seed or split that does not draw its first scenario again as written is refused). espeak-ng's many voices
count as one engine, each voice of the other engines as its own (``flite:awb``). Session 30 found the bundled model
passing 213 of 254 espeak-ng scenarios and 75 of 106 flite ones, the families that need the words heard most apart
(cuespeak 12 of 19 against 4 of 11, translate 16 of 20 against 3 of 10); ``scripts/voices_report.py`` gives the
reason, the listening head names 77 % of held-out espeak-ng voices' task-word tokens right and 48 % of awb's.
"""
import argparse
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from microturn.data.speech import Voice
from microturn.data.world import generate

SEEDS = {"val": 7, "val-b": 8, "val-c": 9, "val-d": 40, "val-e": 41}  # as scripts/valbench.sh makes them
OUT = Path("out/valbench")


def _voice(job: tuple[str, int, int, str]) -> str:
    family, seed, index, split = job
    return generate(family, seed, split, 1.0, index).timeline.meta.get("voice") or "none"


def _kind(voice: str) -> str:
    """``Voice.kind`` of a voice id ("none": no user voice)."""
    return voice if voice == "none" else Voice.from_id(voice).kind


def _draw(ids: list[str], seed: int, split: str) -> dict[str, str]:
    jobs = [(i.rsplit("-", 1)[0], seed, int(i.rsplit("-", 1)[1]), split) for i in ids]
    with ProcessPoolExecutor(2) as pool:
        return dict(zip(ids, pool.map(_voice, jobs, chunksize=8)))


def voices(name: str) -> dict[str, str]:
    """Scenario id -> voice id for validation set ``name`` (cached in out/valbench/voices-NAME.json)."""
    cache = OUT / f"voices-{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ids = [json.loads(line)["id"] for line in open(f"sets/{name}/manifest.jsonl")]
    found = _draw(ids, SEEDS[name], "val")
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(found))
    return found


def _check_drawn(set_dir: str | None, first: str | None, seed: int, split: str) -> None:
    """Refuses a seed or split the report's set was not written with: its first scenario, drawn again, must say the
    words at the times its manifest has (checked where the set's folder is still there)."""
    if not set_dir or first is None or not (manifest := Path(set_dir) / "manifest.jsonl").is_file():
        return
    written = next((json.loads(line) for line in open(manifest) if json.loads(line)["id"] == first), None)
    if written is None:
        return
    family, index = first.rsplit("-", 1)
    again = generate(family, seed, split, 1.0, int(index)).timeline.words
    if [(w.w, round(w.start, 3)) for w in again if w.speaker != "agent"] != \
            [(w["w"], round(w["start"], 3)) for w in written.get("words", [])]:
        raise SystemExit(f"{set_dir} was not written with --seed {seed} --split {split}: its {first} differs from "
                         "the session drawn again")


def table(title: str, scenarios: list[dict], by_id: dict[str, str]) -> None:
    """Prints the passes of ``scenarios`` by voice kind (``_kind``), overall and per family."""
    passed, total = Counter(), Counter()
    for s in scenarios:
        kind = _kind(by_id[s["id"]])
        for key in (kind, (s["family"], kind)):
            passed[key] += bool(s["passed"])
            total[key] += 1
    kinds = sorted(k for k in total if isinstance(k, str))
    print(f"{title}: " + ", ".join(f"{k} {passed[k]} of {total[k]}" for k in kinds))
    for f in sorted({k[0] for k in total if isinstance(k, tuple)}):
        print(f"  {f:<17}" + "  ".join(f"{k} {passed[f, k]:>2}/{total[f, k]:<2}" for k in kinds if total[f, k]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="NAME-THRESHOLD of out/valbench/NAME-THRESHOLD-SET.json")
    ap.add_argument("--report", help="instead: one bench report (JSON) of a set written by microturn synth")
    ap.add_argument("--seed", type=int, help="--report: the seed the set was written with")
    ap.add_argument("--split", default="val", choices=["train", "val", "test"], help="--report: the set's split")
    a = ap.parse_args()
    if a.report:
        if a.runs or a.seed is None:
            raise SystemExit("--report takes --seed (and --split), and no NAME-THRESHOLD")
        try:
            report = json.loads(Path(a.report).read_text())
            scenarios = report["scenarios"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{a.report}: not a bench report ({e})")
        _check_drawn(report.get("set"), scenarios[0]["id"] if scenarios else None, a.seed, a.split)
        table(a.report, scenarios, _draw([s["id"] for s in scenarios], a.seed, a.split))
        return
    if not a.runs:
        raise SystemExit("give NAME-THRESHOLD (out/valbench's reports) or --report")
    for run in a.runs:
        scenarios, by_id = [], {}
        for name in SEEDS:
            report = OUT / f"{run}-{name}.json"
            if not report.exists():
                raise SystemExit(f"no {report}: run scripts/valbench.sh first")
            by_id |= {f"{name}/{k}": v for k, v in voices(name).items()}
            scenarios += [s | {"id": f"{name}/{s['id']}"} for s in json.loads(report.read_text())["scenarios"]]
        table(run, scenarios, by_id)


if __name__ == "__main__":
    main()
