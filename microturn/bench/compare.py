"""``microturn compare``: is agent A better than agent B on the same scenarios? A paired comparison of bench reports.

Two checkpoints' pass counts on a few hundred scenarios differ by a handful whether or not one is better. Paired, the
question has an exact answer: of the scenarios that one passes and the other fails (the discordant pairs), how many
go each way, and how likely a split at least that uneven is if neither were better (a two-sided sign test, the
exact binomial with p = 1/2). Scenarios are paired by (set, id); each side is one or more JSON reports
(``microturn bench --json``), e.g. both checkpoints' reports on the validation sets::

    microturn compare --a out/valbench/new-0.6-*.json --b out/valbench/old-0.6-*.json
"""
from __future__ import annotations

import json
from math import comb, sqrt
from pathlib import Path


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance of a split at least as uneven as wins:losses if each way had p = 1/2."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (95 % at z = 1.96), as fractions. Twelve scenarios a family leave
    wide intervals (9 of 12: 0.47-0.91), which a pass % alone hides; unlike the normal approximation it stays within
    [0, 1] and is not empty at 0 or n passed."""
    if not 0 <= passed <= n or n == 0:
        raise ValueError(f"{passed} passed of {n}: need 0 <= passed <= n and n > 0")
    p, q = passed / n, z * z / n
    mid, half = (p + q / 2) / (1 + q), z * sqrt(p * (1 - p) / n + q / (4 * n)) / (1 + q)
    return (0.0 if passed == 0 else max(0.0, mid - half)), (1.0 if passed == n else min(1.0, mid + half))  # exact ends


def passes(paths: list[str]) -> tuple[dict[tuple[str, str], tuple[str, bool]], dict[str, set[str]]]:
    """(set, scenario id) -> (family, passed), over the reports given (a scenario given twice is an error), and each
    set's manifest hashes (reports written before they recorded one have none)."""
    out, hashes = {}, {}
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no report {p}")
        try:
            rep = json.loads(Path(p).read_text())
            set_name = Path(rep["set"]).name or rep["set"]
            rows = [((set_name, s["id"]), (s["family"], bool(s["passed"]))) for s in rep["scenarios"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{p}: not a bench report (microturn bench --json): {type(e).__name__} {e}") from e
        if rep.get("set_sha256"):
            hashes.setdefault(set_name, set()).add(rep["set_sha256"])
        for key, row in rows:
            if key in out:
                raise ValueError(f"{p}: scenario {key[1]} of set {key[0]} is in two of the reports given")
            out[key] = row
    return out, hashes


def paired(sides: dict[str, list[str]]) -> list[dict[tuple[str, str], tuple[str, bool]]]:
    """Each side's ``passes`` (side name -> its reports), checked to hold the same scenarios of the same sets."""
    read = {name: passes(paths) for name, paths in sides.items()}
    hashes: dict[str, set[str]] = {}
    for _, h in read.values():
        for s, v in h.items():
            hashes.setdefault(s, set()).update(v)
    for s, v in hashes.items():
        if len(v) > 1:
            raise ValueError(f"set {s}: the reports were made on different sets of that name (their manifests "
                             f"differ): their scenarios cannot be paired")
    (first, (a, _)), *rest = read.items()
    for name, (b, _) in rest:
        if a.keys() != b.keys():
            only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
            raise ValueError(f"the sides must hold the same scenarios: {len(only_a)} only in {first} (first: "
                             f"{only_a[:3]}), {len(only_b)} only in {name} (first: {only_b[:3]})")
    if not a:
        raise ValueError("no scenarios in the reports given")
    return [r for r, _ in read.values()]


def compare(a_paths: list[str], b_paths: list[str]) -> dict:
    """Paired figures of A against B: overall and per family, pass counts, discordant pairs and the sign test."""
    a, b = paired({"A": a_paths, "B": b_paths})
    rows: dict[str, dict] = {}
    for key in sorted(a):
        fam, pa = a[key]
        pb = b[key][1]
        for name in (fam, "overall"):
            r = rows.setdefault(name, {"n": 0, "a": 0, "b": 0, "a_only": 0, "b_only": 0})
            r["n"] += 1
            r["a"] += pa
            r["b"] += pb
            r["a_only"] += pa and not pb
            r["b_only"] += pb and not pa
    for r in rows.values():
        r["p"] = sign_test(r["a_only"], r["b_only"])
    overall = rows.pop("overall")
    return {"a": a_paths, "b": b_paths, "overall": overall, "families": dict(sorted(rows.items()))}


def verdict(r: dict) -> str:
    """One sentence on the overall row."""
    w, l, p = r["a_only"], r["b_only"], r["p"]
    head = f"A passes {w} that B fails, B passes {l} that A fails (of {r['n']}; A {r['a']}, B {r['b']}): "
    if p < 0.05:
        return head + f"{'A' if w > l else 'B'} is better (sign test p = {p:.3g})"
    return head + f"no difference shown (sign test p = {p:.3g}; below 0.05 would be one)"


def table(res: dict) -> str:
    lines = ["| family | n | A | B | A only | B only | p |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in [*res["families"].items(), ("**overall**", res["overall"])]:
        lines.append(f"| {name} | {r['n']} | {r['a']} | {r['b']} | {r['a_only']} | {r['b_only']} | {r['p']:.3g} |")
    return "\n".join(lines)
