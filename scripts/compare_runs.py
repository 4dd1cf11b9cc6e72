"""Several training runs side by side: their held-out figures (``log.jsonl``'s evaluations) by step and by hours of
training, as a table and a picture. The hours add up each run's own step times (its train rows' clock), leaving out
the time a stopped run lay idle before it was resumed. Session 38's runs with and without ``--bucket``
(docs/training.md):

    python scripts/compare_runs.py runs/b1 runs/b8 --labels "no buckets" "--bucket 8" \\
        --out docs/img/bucket.png
"""
import argparse
import json
from pathlib import Path

METRICS = {  # name -> (label, how to read it from an evaluation row)
    "text": ("held-out text loss", lambda r: r["text"]),
    "listen": ("held-out listening loss", lambda r: r["listen"]),
    "task": ("task words heard right, %", lambda r: 100 * r["listen_acc_task"]),
    "espeak": ("... held-out espeak-ng voices, %", lambda r: 100 * r["listen_acc_task_by_engine"]["espeak"]),
    "flite": ("... held-out flite voice (awb), %", lambda r: 100 * r["listen_acc_task_by_engine"]["flite"]),
}


def hours_by_step(train_rows: list[dict]) -> dict[int, float]:
    """Step -> hours of training so far, from the train rows' wall clock; a gap between two rows longer than five
    times the run's median time per step (an interruption) counts as the median."""
    pairs = [(b["step"] - a["step"], b["time"] - a["time"]) for a, b in zip(train_rows, train_rows[1:])]
    per_step = sorted(dt / ds for ds, dt in pairs if ds > 0)
    if not per_step:
        raise SystemExit("a run needs at least two train rows in its log to time its steps")
    med = per_step[len(per_step) // 2]
    out, total = {train_rows[0]["step"]: train_rows[0]["step"] * med / 3600}, train_rows[0]["step"] * med
    for (ds, dt), row in zip(pairs, train_rows[1:]):
        if ds <= 0:  # a resumed run logs again from its checkpoint: the clock starts over
            continue
        total += dt if 0 < dt <= 5 * med * ds else med * ds
        out[row["step"]] = total / 3600
    return out


def read(run: Path) -> tuple[list[dict], dict[int, float]]:
    path = run / "log.jsonl"
    if not path.exists():
        raise SystemExit(f"{run}: no log.jsonl (is it a run folder of microturn train?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = {r["step"]: r for r in rows if r["kind"] == "eval"}  # a resumed run's repeated evaluation: the last
    hours = hours_by_step([r for r in rows if r["kind"] == "train"])
    known = sorted(hours)
    at = lambda s: hours[max((k for k in known if k <= s), default=known[0])]  # noqa: E731
    return [evals[s] | {"hours": at(s)} for s in sorted(evals)], hours


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with its log.jsonl)")
    ap.add_argument("--labels", nargs="*", help="a name per run (default: the folders' names)")
    ap.add_argument("--metrics", nargs="+", default=["text", "task", "espeak", "flite"], choices=list(METRICS))
    ap.add_argument("--out", type=Path, help="the picture (PNG): the metrics by step (top) and by hours (bottom)")
    a = ap.parse_args()
    labels = a.labels or [r.name for r in a.runs]
    if len(labels) != len(a.runs):
        raise SystemExit(f"{len(a.runs)} runs but {len(labels)} labels")
    data = {lab: read(run)[0] for lab, run in zip(labels, a.runs)}
    steps = sorted({e["step"] for ev in data.values() for e in ev})
    head = ["step"] + [f"{lab}: {m}" for lab in labels for m in ["hours"] + a.metrics]
    print(" | ".join(head))
    for s in steps:
        cells = [str(s)]
        for lab in labels:
            e = next((e for e in data[lab] if e["step"] == s), None)
            cells += ["-"] * (1 + len(a.metrics)) if e is None else \
                [f"{e['hours']:.2f}"] + [f"{METRICS[m][1](e):.3g}" for m in a.metrics]
        print(" | ".join(cells))
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(2, len(a.metrics), figsize=(4.5 * len(a.metrics), 7), squeeze=False)
        for j, m in enumerate(a.metrics):
            name, get = METRICS[m]
            for lab, ev in data.items():
                for i, x in enumerate(("step", "hours")):
                    ax[i, j].plot([e[x] for e in ev], [get(e) for e in ev], marker=".", label=lab)
            for i, x in enumerate(("step", "hours of training")):
                ax[i, j].set_title(name, fontsize="medium")
                ax[i, j].set_xlabel(x)
                ax[i, j].grid(alpha=0.3)
                ax[i, j].legend(fontsize="small")
        fig.tight_layout()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.out, dpi=80)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
