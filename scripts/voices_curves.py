"""Listening by voice over training: the task-word accuracy of every shards folder in ``scripts/voices_report.py``'s
reports of several checkpoints, as a table and a picture (one panel a folder, one line a run, step on the x axis).

Each report is named RUN-STEP.txt (``out/x1/H-1200.txt``: run H at step 1200); ``--ref`` reports (any name) are
drawn as dashed levels, a checkpoint to compare with. ``--groups`` picks the reports' voice groups (default: "all";
a group a folder lacks is left out), one panel a folder and group. Session 37's picture of the from-scratch runs
runs/x1E and runs/x1H on held-out voices (docs/training.md):

    python scripts/voices_curves.py out/x1vh/*.txt --ref out/x1/vh-bundled.txt --ref-label bundled \\
        --groups all "kokoro jf_tebukuro" "piper joe" espeak "flite awb" --out docs/img/x1_voices.png
"""
import argparse
import re
from collections import defaultdict
from pathlib import Path

ROW = re.compile(r"^(\S+)\s+(.+?)\s+task words\s+(\d+)% of (\d+) tokens$")


def task_words(path: Path, groups: list[str]) -> dict[str, tuple[int, int]]:
    """"folder: group" -> (task-word accuracy %, tokens) from one report's rows of ``groups``."""
    out = {}
    for line in path.read_text().splitlines():
        m = ROW.match(line.strip())
        if m and m[2] in groups and int(m[4]):
            out[m[1] + (f": {m[2]}" if m[2] != "all" else "")] = (int(m[3]), int(m[4]))
    if not out:
        raise SystemExit(f"{path}: no task-word rows of {', '.join(groups)} (is it a scripts/voices_report.py report?)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="reports named RUN-STEP.txt")
    ap.add_argument("--ref", nargs="*", type=Path, default=[], help="reports of a reference checkpoint")
    ap.add_argument("--ref-label", default="reference", help="the reference's name in the table and the legend")
    ap.add_argument("--groups", nargs="+", default=["all"], help='voice groups, e.g. all "flite awb"')
    ap.add_argument("--out", type=Path, help="the picture (PNG)")
    a = ap.parse_args()
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for p in a.reports:
        m = re.fullmatch(r"(.+)-(\d+)", p.stem)
        if not m:
            raise SystemExit(f"{p}: expected a name RUN-STEP.txt")
        runs[m[1]][int(m[2])] = task_words(p, a.groups)
    ref = {k: v for p in a.ref for k, v in task_words(p, a.groups).items()}
    folders = sorted({f for steps in runs.values() for r in steps.values() for f in r})
    print("| run | step | " + " | ".join(folders) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in folders) + " |")
    for run, steps in sorted(runs.items()):
        for step, r in sorted(steps.items()):
            print(f"| {run} | {step} | " + " | ".join(f"{r[f][0]} %" if f in r else "" for f in folders) + " |")
    if ref:
        print(f"| {a.ref_label} | | " + " | ".join(f"{ref[f][0]} %" if f in ref else "" for f in folders) + " |")
    if a.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(folders), figsize=(3.2 * len(folders), 3.0), squeeze=False, sharey=True)
        for ax, f in zip(axes[0], folders):
            for run, steps in sorted(runs.items()):
                xs = [s for s in sorted(steps) if f in steps[s]]
                ax.plot(xs, [steps[s][f][0] for s in xs], marker="o", label=run)
            if f in ref:
                ax.axhline(ref[f][0], color="grey", linestyle="--", label=a.ref_label)
            ax.set_title(f.removeprefix("data/shards/"), fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("task words heard right, %")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.out, dpi=110)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
