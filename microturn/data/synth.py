"""``microturn synth``: scenario sets (format v1) and training shards from the synthetic world."""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from ..stream.layout import Layout, check_ends
from ..stream.scenario import Scenario, write_set
from .shards import PARTIAL, write_shards
from .world import FAMILIES, VOICE_OPTIONS, Session, check_options, generate


def to_scenario(s: Session) -> tuple[Scenario, dict, dict]:
    """The user side of a session and its rules as a format-v1 scenario (+ its audio and video payloads)."""
    tl = s.timeline
    extra = ({"input": tl.meta["input"]} if tl.meta.get("input") else {}) | s.meta
    sc = Scenario(id=s.id, family=s.family, duration=tl.duration, expect=s.expect,
                  text=[{"t": e.t, "text": e.text} for e in tl.text if e.source == "typed"],
                  words=[w for w in tl.words if w.speaker != "agent"],
                  background={"delay": round(s.background_delay, 3)} if s.background_delay is not None else None,
                  extra=extra)
    audio = {s.id: tl.track("user")}
    video = {s.id: (tl.video, tl.fps)} if tl.video is not None else {}
    return sc, audio, video


def _job(args):
    family, seed, split, index, voices = args
    return to_scenario(generate(family, seed, split, 1.0, index, **voices))


def draw(out: str | Path, scenarios: list[Scenario], per_family: int = 1) -> list[Path]:
    """Timeline pictures (user speech, words, typed text, rep marks, rule windows) of the first scenarios of each
    family, as ``OUT/pictures/<id>.png``."""
    from ..stream.plot import plot_timeline

    done, paths = {}, []
    for sc in scenarios:
        if done.get(sc.family, 0) >= per_family:
            continue
        done[sc.family] = done.get(sc.family, 0) + 1
        audio = sc.load_audio() if sc.audio else None
        paths.append(plot_timeline(Path(out) / "pictures" / f"{sc.id}.png", sc.duration, audio, sc.words, sc.text,
                                   [r.to_json() for r in sc.expect], sc.extra.get("rep_times", []),
                                   title=f"{sc.id} ({sc.family})"))
    return paths


def write_scenario_set(out: str | Path, per_family: int, seed: int = 0, split: str = "test", families=FAMILIES,
                       workers: int | None = None, video_format: str = "mp4", pictures: int = 1, **voices) -> dict:
    """A scenario set of ``per_family`` scenarios per family at difficulty 1; ``voices``: ``world.generate``'s voice
    options (``world.VOICE_OPTIONS``), where the split allows them (a validation set spoken by Kokoro's or Piper's
    held-out voice, say)."""
    if unknown := [k for k in voices if k not in VOICE_OPTIONS]:
        raise ValueError(f"{', '.join(unknown)}: not voice options ({', '.join(VOICE_OPTIONS)})")
    check_options(split, **voices)
    jobs = [(f, seed, split, i, voices) for f in families for i in range(per_family)]
    t0 = time.perf_counter()
    scenarios, audio, video = [], {}, {}
    with ProcessPoolExecutor(workers or min(2, os.cpu_count() or 1)) as pool:
        for sc, a, v in tqdm(pool.map(_job, jobs, chunksize=2), total=len(jobs), desc=f"scenarios {split}",
                             unit="scenario"):
            scenarios.append(sc)
            audio |= a
            video |= v
    written = write_set(out, scenarios, audio=audio, video=video, video_format=video_format)
    dt = time.perf_counter() - t0
    draw(out, written, per_family=pictures)
    return {"scenarios": len(written), "seconds": round(dt, 1), "scenarios_per_minute": round(60 * len(jobs) / dt, 1)}


SET_PARTS = ("manifest.jsonl", "audio", "video", "pictures")  # what a scenario set folder holds


def parse_difficulty(text: str) -> tuple[float, float]:
    """``--difficulty LO,HI`` with 0 <= LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--difficulty must be two numbers LO,HI, got {text!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"--difficulty must have 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi


def prepare_out(out: str | Path, shards: bool) -> list[Path]:
    """Check ``out`` before anything is generated: a new or empty folder, or one that holds what this command
    writes. Returns those parts (the old set or shards, an interrupted writer's last shard too), which
    :func:`replace_out` replaces once the new ones are written whole. Any other folder is refused: nothing of the
    user's is deleted."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    old_shards = sorted(out.glob("shard-*")) if out.is_dir() else []
    old_set = [out / p for p in SET_PARTS if (out / p).exists()]
    kind, other = ("training shards", "a scenario set") if shards else ("scenario set", "training shards")
    if shards and (out / "manifest.jsonl").exists() or not shards and old_shards:
        raise ValueError(f"--out {out} holds {other}: choose another folder")
    if shards:
        mine = old_shards
    else:
        mine = old_set if (out / "manifest.jsonl").exists() else []
    if out.is_dir() and any(p.name != PARTIAL for p in out.iterdir()) and not mine:
        raise ValueError(f"--out {out} is not empty and holds no {kind}: choose a new or empty folder")
    return mine


def partial(out: str | Path) -> Path:
    """Where ``microturn synth`` writes before the result replaces what ``out`` held: a sibling folder, or
    ``out/.partial`` where the parent cannot be written (a mount point), so an interrupted or failed run leaves the
    old set or shards whole (training's ``shard_dirs`` skips either)."""
    out = Path(out).resolve()  # "." has no name; a linked folder's parts are renamed on its own file system
    parent = next(p for p in out.parents if p.exists())  # the folder its sibling would be made in
    return out.with_name(out.name + PARTIAL) if os.access(parent, os.W_OK) else out / PARTIAL


def replace_out(out: Path, mine: list[Path], tmp: Path) -> None:
    """Swap the new parts written in ``tmp`` for the old ones (``mine``) in ``out``."""
    for p in mine:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for p in sorted(tmp.iterdir()):
        p.rename(out / p.name)
    tmp.rmdir()


def run(out: str, per_family: int = 12, seed: int = 0, families: str | None = None, split: str = "test",
        shards: bool = False, workers: int | None = None, difficulty: str = "0,1",
        listen_ends: float | None = None, **options) -> dict:
    """``microturn synth``: a scenario set, or training shards with ``shards`` (``options``: ``world.generate``'s
    options; a scenario set takes the voice options only; ``listen_ends``: ``write_shards``')."""
    fams = tuple(f.strip() for f in families.split(",")) if families else FAMILIES
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    if len(set(fams)) < len(fams):
        raise ValueError(f"--families names a family twice: {','.join(fams)}")
    if per_family < 1:
        raise ValueError("--per-family must be at least 1")
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    try:
        check_ends(listen_ends, Layout())
    except ValueError as e:
        raise ValueError(f"--listen-ends: {e}") from None
    shard_only = (options | {"listen_ends": listen_ends}).items()
    if not shards and (given := [f"--{k.replace('_', '-')}" for k, v in shard_only
                                 if k not in VOICE_OPTIONS and
                                 (v is not None if k in ("typed", "listen_ends") else v)]):
        raise ValueError(f"{', '.join(given)}: options of training shards (--shards)")
    lo_hi = parse_difficulty(difficulty)
    check_options(split, **(options if shards else {k: v for k, v in options.items() if k in VOICE_OPTIONS and v}))
    mine = prepare_out(out, shards)  # only once every option is known to be good
    tmp = partial(out)
    if tmp.exists():  # an interrupted or failed earlier run's
        shutil.rmtree(tmp)
    if shards:
        r = write_shards(tmp, per_family, seed, split, fams, workers=workers, difficulty=lo_hi,
                         listen_ends=listen_ends, **options)
    else:
        r = write_scenario_set(tmp, per_family, seed, split, fams, workers,
                               **{k: v for k, v in options.items() if k in VOICE_OPTIONS and v})
    if mine:
        print(f"replacing the {'training shards' if shards else 'scenario set'} in {out}")
    replace_out(Path(out), mine, tmp)
    if shards:
        print(f"wrote {r['sessions']} {split} sessions in {r['shards']} shard(s) to {out}: "
              f"{r['sessions_per_minute']:.0f} sessions per minute ({r['seconds']:.0f} s)")
    else:
        print(f"wrote {r['scenarios']} scenarios to {out}: {r['scenarios_per_minute']:.0f} per minute "
              f"({r['seconds']:.0f} s)")
    return r
