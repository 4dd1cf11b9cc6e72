"""``microturn results``: the README's results table, from one command.

Runs the bundled (or a given) model and the harness baselines over a scenario set and prints one markdown table:
pass % per family for each agent (the model's with its 95 % Wilson interval), with the turn-taking latency, the
stop latency, the pause take-over rate and the backchannel rate (the Full-Duplex-Bench figures this set can give),
then the model paired with each baseline scenario by scenario (``compare``: the scenarios each passes that the other
fails, and the sign test), the model's instruction families split by how the instruction came (by voice or typed,
as the spec reports them), and writes every agent's JSON report.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..stream.scenario import FAMILIES
from .compare import compare, wilson
from .rules import family_label
from .run import bench

GOALS = {"timespeak": "≥ 90", "cuespeak": "≥ 95", "repcount": "≥ 80 (obo)", "turn": "≥ 95, ≤ 0.30 s", "pause": "≥ 95",
         "interrupt": "≥ 95, stop ≤ 0.4 s", "backchannel": "≥ 90", "user_backchannel": "≥ 90",
         "other_speaker": "≥ 90", "delegate": "≥ 85", "translate": "≥ 85", "refusal": "≥ 95"}


def _fmt(v, unit=""):
    return "–" if v is None else f"{v:g}{unit}"


def takeover_rate(report: dict, family: str) -> float | None:
    """Share of a family's no_takeover rules that failed (Full-Duplex-Bench's take-over rate, TOR)."""
    rules = [r for s in report["scenarios"] if s["family"] == family for r in s["rules"] if r["kind"] == "no_takeover"]
    return round(100 * sum(not r["passed"] for r in rules) / len(rules), 1) if rules else None


def cell(report: dict, family: str) -> str:
    f = report["families"].get(family)
    if not f:
        return "–"
    extra = []
    if family == "turn" and f.get("latency_s"):
        extra.append(f"{f['latency_s']['median']:.2f} s")
    if family == "interrupt" and f.get("stop_latency_s"):
        extra.append(f"stop {f['stop_latency_s']['median']:.2f} s")
    if family == "repcount" and f.get("count"):
        extra.append(f"obo {f['count']['obo_pct']:g}")
    if family == "backchannel" and f.get("backchannels_per_min") is not None:
        extra.append(f"{f['backchannels_per_min']:g}/min")
    if family == "pause":
        tor = takeover_rate(report, "pause")
        extra.append(f"TOR {_fmt(tor, ' %')}")
    return f"{f['pass_pct']:g}" + (f" ({', '.join(extra)})" if extra else "")


def interval(passed: int, n: int) -> str:
    """A pass rate's 95 % Wilson interval in %, e.g. "47–91" for 9 of 12."""
    lo, hi = wilson(passed, n)
    return f"{100 * lo:.0f}–{100 * hi:.0f}"


def by_input(report: dict) -> str:
    """The instruction families' pass % by voice and typed (the spec's ``pass_pct_by_input``), with the scenarios
    counted (``n_by_input``), which a pass % of a handful of scenarios alone would overstate."""
    parts = []
    for fam, f in report["families"].items():
        if "n_by_input" in f:
            parts.append(f"{fam} " + " / ".join(f"{_fmt(f['pass_pct_by_input'][m])} ({c['passed']} of {c['n']})"
                                                for m, c in f["n_by_input"].items()))
    return "; ".join(parts)


def run(scenarios: str, checkpoint: str | None = None, out: str = "out/results",
        harness: tuple[str, ...] = ("pipecat", "livekit"), warps: tuple[float, ...] | None = None) -> str:
    """``warps``: the model's test-time vocal-tract warps (``Sampling.warps``) instead of the checkpoint's own."""
    Path(out).mkdir(parents=True, exist_ok=True)
    reports, paths = {}, {}
    runs = [("microturn model", "model", {"checkpoint": checkpoint, "warps": warps})] + \
        [(f"harness {h} + oracle", "harness", {"preset": h, "responder": "oracle"}) for h in harness]
    for name, agent, kw in runs:
        safe = name.replace(" ", "_").replace("+", "")
        paths[name] = str(Path(out) / f"{safe}.json")
        reports[name] = bench(scenarios, agent, json_path=paths[name], print_table=False,
                              pictures=str(Path(out) / f"{safe}_pictures") if agent == "model" else None,
                              **{k: v for k, v in kw.items() if v is not None})
    names = list(reports)
    first = reports[names[0]]
    cols = [names[0], "95 % interval", *names[1:]]  # the model's pass rate, how far 12 scenarios a family pin it
    lines = ["| family | goal | " + " | ".join(cols) + " |", "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for fam in FAMILIES + tuple(f for f in first["families"] if f not in FAMILIES):
        f = first["families"].get(fam)
        cells = [cell(reports[n], fam) for n in names]
        cells.insert(1, interval(f["passed"], f["n"]) if f else "–")
        label = family_label(fam).replace("|", "\\|")  # a family named with a bar keeps the table's columns
        lines.append(f"| {label} | {GOALS.get(fam, '')} | {' | '.join(cells)} |")
    n_all = sum(f["n"] for f in first["families"].values())
    overall = [f"**{reports[n]['overall_pass_pct']:g}**" for n in names]
    overall.insert(1, interval(sum(f["passed"] for f in first["families"].values()), n_all))
    lines.append("| **overall** | | " + " | ".join(overall) + " |")
    table = "\n".join(lines)
    heard = ", ".join(f"{w:g}" for w in first["agent_options"]["sampling"]["warps"])
    table += (f"\n\nSet `{scenarios}` ({n_all} scenarios), model checkpoint "
              f"`{first.get('checkpoint')}`{f' heard through the warps {heard}' if heard else ''}, "
              f"{first['created']}. Pass % per family; in brackets: turn-taking latency (median), stop latency "
              f"(median), backchannels a minute, RepCount off-by-one %, pause take-over rate (TOR); the model's 95 % "
              f"interval: Wilson's, of its pass rate on scenarios like these.")
    table += "\n"
    for n in names[1:]:  # the model against each baseline, scenario by scenario (`microturn compare`)
        r = compare([paths[names[0]]], [paths[n]])["overall"]
        table += (f"\n- Paired with {n}: the model passes {r['a_only']} scenarios it fails, it passes {r['b_only']} "
                  f"the model fails (sign test p = {r['p']:.2g}).")
    split = by_input(first)
    if split:
        table += f"\n- The model by how the instruction came, pass % by voice / typed (scenarios): {split}."
    print(table)
    (Path(out) / "table.md").write_text(table + "\n")
    (Path(out) / "summary.json").write_text(json.dumps({n: r["families"] for n, r in reports.items()}, indent=1))
    return table
