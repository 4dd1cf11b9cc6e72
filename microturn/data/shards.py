"""Training shards: sessions pre-rendered and laid out (dMel bins, tokens, targets), memory-mapped for fast reads.

A shard is a folder of arrays concatenated over the micro-turns of its sessions, plus ``sessions.json``:

    audio.npy   [N, frames, 80] uint8   user dMel bins          mel.npy    [N, frames, 80] uint8  agent dMel bins
    text_in.npy [N, K] int16            out.npy [N, M] int16    listen.npy [N, A] int16
    frame.npy   [N] int32 (index into frames.npy, -1: no frame) frames.npy [F, S, S, 3] uint8
    sessions.json: {"layout": {...}, "sessions": [{"id", "family", "start", "length", ...}]}
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codecs import dmel
from ..stream.layout import Layout, check_ends, encode_timeline
from ..stream.tokenizer import SPECIALS, default_tokenizer
from .world import FAMILIES, VOICE_OPTIONS, Session, check_options, generate


def _recorded(options: dict, family: str, drilled: bool) -> dict:
    """The ``generate`` options a session's info keeps (those that changed it), so it can be rendered again."""
    kept = {k: options[k] for k in VOICE_OPTIONS + ("more_talk", "more_words", "odd_words") if options.get(k)}
    return kept | ({"drill": True} if drilled else {}) | \
        ({"typed": options["typed"]} if options.get("typed") is not None else {}) | \
        ({"note_questions": True} if options.get("note_questions") and family == "delegate" else {}) | \
        ({"heard_late": True} if options.get("heard_late") and family == "cuespeak" else {}) | \
        ({"late_replies": options["late_replies"]} if options.get("late_replies") else {}) | \
        ({"short_numbers": options["short_numbers"]} if options.get("short_numbers") and family == "delegate" else {})


def _render(job) -> tuple[dict, dict]:
    torch.set_num_threads(1)  # one process per core: no thread oversubscription
    family, seed, split, difficulty, index, layout, options, listen_ends = job
    s = generate(family, seed, split, difficulty, index, **options)
    e = encode_timeline(s.timeline, layout, default_tokenizer(), listen_ends)

    T = len(e["clock"])
    on = e["video_on"]
    arrays = {"audio": e["audio"].reshape(T, layout.frames, dmel.N_MELS),
              "mel": dmel.quantize(torch.from_numpy(e["mel"])).numpy(),
              "text_in": e["text_in"].astype(np.int16), "out": e["out"].astype(np.int16),
              "listen": e["listen"].astype(np.int16), "frames": e["video"][on], "on": on}
    info = {"id": s.id, "family": family, "length": T, "difficulty": difficulty, "seed": seed, "index": index,
            "voice": s.timeline.meta.get("voice"), "duration": s.timeline.duration} | \
        _recorded(options, family, bool(s.timeline.meta.get("drill")))
    return info, arrays


def _options(info: dict) -> dict:
    """The ``generate`` options a shard's session was made with, from its ``info`` in ``sessions.json``."""
    kept = VOICE_OPTIONS + ("typed", "late_replies", "short_numbers", "more_talk", "more_words", "odd_words")
    return {k: info[k] for k in kept if k in info} | \
        {"cue_drill": 1.0 if info.get("drill") else 0.0, "note_questions": info.get("note_questions", False),
         "heard_late": info.get("heard_late", False)}


def session_again(info: dict, split: str) -> Session:
    """The session a shard lists, generated again (its timeline: the words' times the shard does not keep)."""
    return generate(info["family"], info["seed"], split, info["difficulty"], info["index"], **_options(info))


def render_again(info: dict, split: str, layout: Layout, listen_ends: float | None = None) -> dict:
    """The arrays of a session a shard lists (its ``info`` in ``sessions.json``), rendered again by today's
    generators and layout (deterministic: ``scripts/relayout_shards.py`` checks the user audio comes out the same);
    ``listen_ends``: the shard's (``listen_ends_of``)."""
    return _render((info["family"], info["seed"], split, info["difficulty"], info["index"], layout,
                    _options(info), listen_ends))[1]


PARTIAL = ".partial"  # the suffix of a folder still being written (``synth.partial``); readers skip it


def listen_ends_of(meta: dict) -> float | None:
    """A shard's ``listen_ends`` (``write_shards``) from its ``sessions.json``: None where it has none; shards of
    session 63 recorded ``true``, which is 0 (every word named at its end)."""
    v = meta.get("listen_ends")
    return 0.0 if v is True else v


def write_shards(out: str | Path, n_per_family: int, seed: int = 0, split: str = "train",
                 families=FAMILIES, layout: Layout = Layout(), shard_size: int = 512, workers: int | None = None,
                 difficulty: tuple[float, float] = (0.0, 1.0), listen_ends: float | None = None, **options) -> dict:
    """Render ``n_per_family`` sessions of each family into shards under ``out``; returns throughput figures.

    Difficulty (noise, voices, typed vs spoken instructions) is spread evenly over ``difficulty`` so training can
    follow a curriculum. ``options`` are ``world.generate``'s (``generated_voices``, ``generated_accents``,
    ``cue_drill``, ``typed``, ``note_questions``, ``heard_late``, ``festival``, ``mbrola``, ``kokoro``, ``piper``,
    ``low_slt``, ``late_replies``, ``short_numbers``, ``more_talk``, ``more_words``,
    ``odd_words``),
    the same for every session; each session's info keeps those that changed it. ``listen_ends``: the listening
    targets name each word at the token it ends in too (``layout.listen_targets``'s ``ends``, in seconds), recorded
    in ``sessions.json`` (``listen_ends_of`` reads it).
    Deterministic for its arguments.
    """
    check_options(split, **options)
    check_ends(listen_ends, layout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = difficulty
    jobs = [(f, seed, split, round(lo + (hi - lo) * (i / max(1, n_per_family - 1)), 3), i, layout, options,
             listen_ends)
            for i in range(n_per_family) for f in families]
    workers = workers or min(2, os.cpu_count() or 1)
    t0, n_shard = time.perf_counter(), 0
    infos: list[dict] = []
    bufs: dict[str, list] = {}

    def flush():
        nonlocal infos, bufs, n_shard
        if not infos:
            return
        d = out / f"shard-{n_shard:05d}"
        d.mkdir(exist_ok=True)
        for k, parts in bufs.items():
            np.save(d / f"{k}.npy", np.concatenate(parts))
        (d / "sessions.json").write_text(json.dumps({"layout": layout.to_json(), "split": split,
                                                     "specials": len(SPECIALS), "sessions": infos} |
                                                    ({"listen_ends": listen_ends} if listen_ends is not None else {})))
        infos, bufs, n_shard = [], {}, n_shard + 1

    with ProcessPoolExecutor(workers) as pool:
        for info, arr in tqdm(pool.map(_render, jobs, chunksize=4), total=len(jobs), desc=f"shards {split}",
                              unit="session"):
            on = arr.pop("on")
            n_frames = sum(len(f) for f in bufs.get("frames", []))
            arr["frame"] = np.where(on, n_frames + np.cumsum(on) - 1, -1).astype(np.int32)
            info["start"] = sum(i["length"] for i in infos)
            infos.append(info)
            for k, v in arr.items():
                bufs.setdefault(k, []).append(v)
            if len(infos) >= shard_size:
                flush()
        flush()
    dt = time.perf_counter() - t0
    return {"sessions": len(jobs), "seconds": round(dt, 1), "sessions_per_minute": round(60 * len(jobs) / dt, 1),
            "shards": n_shard}
