"""``microturn bench``: run an agent over a scenario set, score it, report (JSON, table, pictures, FDB export).

    report = bench("sets/dev", "oracle", json_path="out/oracle.json", pictures="out/png")
    report = bench("sets/dev", "harness", preset="livekit", responder="oracle")
    report = bench("sets/dev", "model", checkpoint="ckpt.safetensors", clock="realtime")

Agents: ``oracle``, ``silent``, ``model``, ``harness`` (``preset=`` pipecat | pipecat-fallback | livekit | openai;
``harness:livekit`` is a shorthand), ``remote`` (a running ``microturn serve``: ``url=``, ``token=``). ``families`` keeps only those families (a list or a
comma-separated string); ``limit`` keeps the first N scenarios of each family.

Beyond the spec's report keys, the report carries ``audio_word_agreement`` (per family: Silero VAD over the agent's
audio against its word onsets), ``agent_options`` and, for the model, ``compute`` (per-step compute and overruns).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..codecs.audio import SAMPLE_RATE, save_wav
from ..stream.scenario import FAMILIES, Scenario, ScenarioError, read_set, unknown_families
from ..stream.words import Word
from . import rules
from .agents import Agent, AgentOutput, ModelAgent, OracleAgent, SilentAgent
from .harness import PRESETS, HarnessAgent, segments, vad_probs
from .remote import RemoteAgent

AGENTS = ("oracle", "silent", "model", "harness", "remote")
AGREEMENT_WINDOW = 0.3  # a word "has voice" when the VAD hears voice within this many seconds of its start


# ----------------------------------------------------------------------------------------------- the entry point
def bench(scenarios: str, agent: str | Agent, json_path=None, export_fdb=None, pictures=None, n_pictures: int = 4,
          checkpoint: str | None = None, clock: str = "simulated", responder: str = "oracle", families=None,
          limit: int | None = None, picture_ids=None, print_table: bool = True, trace: bool = False,
          **agent_options) -> dict:
    """Run ``agent`` over the set in ``scenarios``; returns the JSON report (also written to ``json_path``).
    ``trace``: each scenario's entry also holds what the agent did (``output``: its words, events and, for the model,
    the out tokens of each micro-turn that wrote more than <eot>, silent notes and timers included)."""
    chosen = select(read_set(scenarios), families, limit)
    for fam, n in unknown_families(chosen).items():
        print(f"note: family {fam!r} ({n} scenario{'s' * (n != 1)}) is not one of the spec's "
              f"({', '.join(FAMILIES)}): its rules are scored and it is reported under its own name", file=sys.stderr)
    if json_path:  # its folder made before the run: a bad path fails now, not after the run with the report lost
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        if Path(json_path).is_dir() or not os.access(Path(json_path).parent, os.W_OK) or (
                Path(json_path).exists() and not os.access(json_path, os.W_OK)):
            raise ValueError(f"cannot write the report to {json_path}")
    for flag, folder in (("--export-fdb", export_fdb), ("--pictures", pictures)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"{flag} {folder} is a file, not a folder")
    runner = agent if isinstance(agent, Agent) else make_agent(agent, checkpoint=checkpoint, clock=clock,
                                                               responder=responder, **agent_options)
    outputs = runner.run_many(chosen)
    results = [rules.evaluate(s, o.words) for s, o in zip(chosen, outputs)]
    rep = rules.report(scenarios, runner.name, runner.checkpoint, results, chosen, hear=first_speech)
    if trace:
        for entry, o in zip(rep["scenarios"], outputs):
            entry["output"] = {"words": [[w.w, round(w.start, 3), round(w.end, 3)] for w in o.words],
                               "events": o.events, "out": o.trace}
    rep["audio_word_agreement"] = agreement_by_family(chosen, outputs)
    rep["agent_options"] = {"clock": clock, **({"responder": responder} if runner.name.startswith("harness") else {}),
                            **{k: v for k, v in agent_options.items() if _jsonable(v) and k != "token"}}
    if isinstance(runner, ModelAgent):  # the decoding it used, the checkpoint's own settings included
        rep["agent_options"]["sampling"] = dataclasses.asdict(runner.sampling) | {"warps": list(runner.sampling.warps)}
    compute = compute_summary(outputs)
    if compute:
        rep["compute"] = compute
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if export_fdb:
        export_fdb_layout(export_fdb, chosen, outputs)
    if pictures:
        draw_pictures(pictures, chosen, outputs, results, runner.name, n_pictures, picture_ids)
    if print_table:
        print(format_table(rep))
    return rep


def make_agent(name: str, checkpoint: str | None = None, clock: str = "simulated", responder: str = "oracle",
               **options) -> Agent:
    """An agent by name (see the module docstring); ``options`` go to its constructor."""
    base, _, preset = name.partition(":")
    if clock not in ("simulated", "realtime"):
        raise ValueError(f"clock must be 'simulated' or 'realtime', got {clock!r}")
    if clock == "realtime" and base not in ("model", "remote"):
        raise ValueError("clock='realtime' applies to the model and remote agents only (the others have no compute "
                         "to time)")
    if base == "oracle":
        return OracleAgent(**options)
    if base == "silent":
        return SilentAgent(**options)
    if base == "model":
        return ModelAgent(checkpoint=checkpoint, clock=clock, **options)
    if base == "harness":
        if preset:
            options["preset"] = preset
        return HarnessAgent(responder=responder, checkpoint=checkpoint, **options)
    if base == "remote":  # options: url, token, realtime, pace ("fast"; clock="realtime" means "realtime"), ...
        if clock == "realtime":
            options.setdefault("pace", "realtime")
        return RemoteAgent(**options)
    raise ValueError(f"unknown agent {name!r}; known: {', '.join(AGENTS)} (harness presets: {', '.join(PRESETS)})")


def select(scenarios: list[Scenario], families=None, limit: int | None = None) -> list[Scenario]:
    """Keep the given families (list or comma-separated) and at most ``limit`` scenarios of each, in set order."""
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    if families:
        known = list(FAMILIES) + sorted({s.family for s in scenarios} - set(FAMILIES))  # the set's own too
        unknown = [f for f in families if f not in known]
        if unknown:
            raise ValueError(f"unknown families {', '.join(unknown)}; known: {', '.join(known)}")
        scenarios = [s for s in scenarios if s.family in families]
    if limit is not None:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for s in scenarios:
            if seen[s.family] < limit:
                kept.append(s)
                seen[s.family] += 1
        scenarios = kept
    if not scenarios:
        raise ScenarioError("no scenario left after the families/limit filters")
    return scenarios


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None)))


def first_speech(scenario: Scenario) -> float | None:
    """When Silero VAD first hears speech in a scenario's user audio (None: never): how the report tells a spoken
    first instruction from a typed one in a set without word timings (``words`` is optional; ``input_mode``)."""
    heard = voiced_segments(scenario.load_audio(SAMPLE_RATE))
    return heard[0][0] if heard else None


# ----------------------------------------------------------------------------------------------- audio vs words
def voiced_segments(audio: np.ndarray) -> list[tuple[float, float]]:
    """(onset, end) of the speech Silero VAD hears in 16 kHz audio, the agent's or the user's (threshold 0.5, 0.1 s
    to end a segment)."""
    if not np.any(audio):
        return []
    return [(s.onset, s.end) for s in segments(vad_probs(audio), 0.5, 0.0, 0.1)]


def agreement(words: list[Word], audio: np.ndarray) -> tuple[list[float], int, int, int]:
    """(|audio onset - nearest word start| per VAD onset, words without voice within ±0.3 s of their start, words,
    audio onsets)."""
    voiced = voiced_segments(audio)
    starts = [w.start for w in words]
    deltas = [min(abs(a - s) for s in starts) for a, _ in voiced] if starts else []
    lonely = sum(not any(a - AGREEMENT_WINDOW <= w.start <= b + AGREEMENT_WINDOW for a, b in voiced) for w in words)
    return deltas, lonely, len(words), len(voiced)


def agreement_by_family(scenarios: list[Scenario], outputs: list[AgentOutput]) -> dict:
    """Per family: median |Δ| between audio onsets and word onsets (s) and the share of words with no voice near."""
    acc: dict[str, list] = defaultdict(lambda: [[], 0, 0, 0])
    for s, o in zip(scenarios, outputs):
        words = rules.prepare(o.words, s.duration)
        for k, v in enumerate(agreement(words, o.audio)):
            acc[s.family][k] += v
    return {f: {"median_abs_s": round(float(np.median(d)), 3) if d else None,
                "words_without_voice_pct": round(100.0 * lonely / n, 1) if n else None,
                "n_words": n, "n_audio_onsets": onsets}
            for f, (d, lonely, n, onsets) in acc.items()}


def compute_summary(outputs: list[AgentOutput]) -> dict | None:
    """The model's per-step compute over all scenarios (None for agents without a model)."""
    stats = [o.stats for o in outputs if "step_ms" in o.stats]
    if not stats:
        return None
    med = [s["step_ms"]["median"] for s in stats if s["step_ms"]["median"] is not None]
    p90 = [s["step_ms"]["p90"] for s in stats if s["step_ms"]["p90"] is not None]
    out = {"clock": stats[0]["clock"], "steps": sum(s["steps"] for s in stats),
           "overruns": sum(s["overruns"] for s in stats),
           "step_ms_median": round(float(np.median(med)), 3) if med else None,
           "step_ms_p90": round(float(np.max(p90)), 3) if p90 else None}
    late = [s["late_ms"]["p90"] for s in stats if s.get("late_ms", {}).get("p90") is not None]
    if late:
        out["late_ms_p90"] = round(float(np.max(late)), 3)
    return out


# ----------------------------------------------------------------------------------------------- outputs
def export_fdb_layout(out_dir, scenarios: list[Scenario], outputs: list[AgentOutput]) -> None:
    """Full-Duplex-Bench layout: DIR/<id>/input.wav, output.wav (agent audio, same clock), output.json. Scenario
    folders an earlier export left there (another --families, say) are removed, so that FDB's scoring, which walks
    DIR, sees this run only; anything else in DIR is left alone."""
    ids = {s.id for s in scenarios}
    if Path(out_dir).is_dir():
        for d in Path(out_dir).iterdir():
            if d.name not in ids and d.is_dir() and not d.is_symlink() and (d / "output.json").is_file() and \
                    {p.name for p in d.iterdir()} <= {"input.wav", "output.wav", "output.json"}:
                shutil.rmtree(d)
    for s, o in zip(scenarios, outputs):
        d = Path(out_dir) / s.id
        d.mkdir(parents=True, exist_ok=True)
        save_wav(d / "input.wav", s.load_audio(SAMPLE_RATE), SAMPLE_RATE)
        save_wav(d / "output.wav", _session_length(o.audio, s.duration), SAMPLE_RATE)
        words = rules.prepare(o.words, s.duration)
        doc = {"text": " ".join(w.w for w in words),
               "chunks": [{"text": w.w, "timestamp": [round(w.start, 3), round(w.end, 3)]} for w in words]}
        (d / "output.json").write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")


def _session_length(audio: np.ndarray, duration: float) -> np.ndarray:
    n = int(round(duration * SAMPLE_RATE))
    out = np.zeros(n, np.float32)
    out[: min(n, len(audio))] = np.asarray(audio, np.float32)[:n]
    return out


def pick_pictures(scenarios: list[Scenario], results: list[rules.ScenarioResult], n: int, ids=None) -> list[int]:
    """Indices to draw: the given ids, else failed scenarios first, one family at a time, then passed ones."""
    if ids:
        wanted = set(ids)
        return [i for i, s in enumerate(scenarios) if s.id in wanted]
    order = [i for i, r in enumerate(results) if not r.passed] + [i for i, r in enumerate(results) if r.passed]
    picked, families = [], set()
    for rnd in range(2):  # first one per family, then the rest in order
        for i in order:
            if len(picked) >= n:
                return picked
            if i not in picked and (rnd or scenarios[i].family not in families):
                picked.append(i)
                families.add(scenarios[i].family)
    return picked


def draw_pictures(out_dir, scenarios, outputs, results, agent_name: str, n: int, ids=None) -> list[Path]:
    """Timeline PNGs (user speech, words of both sides, typed text, rule windows green/red) of chosen scenarios."""
    from ..stream.plot import plot_timeline
    from ..stream.timeline import TextEvent

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in pick_pictures(scenarios, results, n, ids):
        s, o, r = scenarios[i], outputs[i], results[i]
        text = [TextEvent(e.t, e.text, "typed") for e in s.text]
        text += [TextEvent(e["t"], e["text"], "bg") for e in o.events if e.get("kind") == "answer" and e.get("text")]
        words = list(s.words) + [Word(w.w, w.start, w.end, "agent") for w in o.words]
        title = f"{s.id} ({s.family}): {'PASS' if r.passed else 'FAIL'}, agent {agent_name}"
        paths.append(plot_timeline(Path(out_dir) / f"{s.id}.png", s.duration, s.load_audio(SAMPLE_RATE), words,
                                   text, [x.to_json() for x in s.expect], title=title,
                                   results=[x.passed for x in r.rules]))
    return paths


# ----------------------------------------------------------------------------------------------- the table
def _num(v, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def _dist(d, unit: str = "s") -> str:
    return "-" if not d else f"{d['median']:.2f}/{d['p90']:.2f}{unit}"


def format_table(rep: dict) -> str:
    """The readable table: one line per family, then the overall score."""
    head = ("family", "pass%", "n", "latency med/p90", "stop med/p90", "count obo%/MAE", "bc/min", "voice/typed%",
            "audio-word |Δ|")
    rows = [head]
    for fam, b in rep["families"].items():
        by = b.get("pass_pct_by_input")
        agree = rep.get("audio_word_agreement", {}).get(fam, {})
        rows.append((rules.family_label(fam), _num(b["pass_pct"]), str(b["n"]), _dist(b["latency_s"]),
                     _dist(b["stop_latency_s"]),
                     "-" if not b["count"] else f"{_num(b['count']['obo_pct'])}/{_num(b['count']['mae'])}",
                     _num(b["backchannels_per_min"]), "-" if by is None else f"{_num(by['voice'])}/{_num(by['typed'])}",
                     _num(agree.get("median_abs_s"), "s")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"set {rep['set']}  agent {rep['agent']}  checkpoint {rep['checkpoint']}  {rep['created']}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    n = sum(b["n"] for b in rep["families"].values())
    lines.append(f"overall {_num(rep['overall_pass_pct'])}% of {n} scenarios")
    if rep.get("compute"):
        c = rep["compute"]
        lines.append(f"compute ({c['clock']} clock): {c['steps']} steps, median {_num(c['step_ms_median'])} ms, "
                     f"p90 {_num(c['step_ms_p90'])} ms, {c['overruns']} overruns")
    return "\n".join(lines)
