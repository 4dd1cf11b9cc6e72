"""A copy of training shards whose listening targets also name each word at the audio token it ends in
(``layout.listen_targets``'s ``ends``: where the word reaches ``--ends`` seconds into it; ``microturn synth
--listen-ends`` writes such shards from the start).

The copy links every array of the source shards but ``listen.npy``, which it writes again from the sessions
generated again (``shards.session_again``: the words' times, which shards do not keep); its ``sessions.json`` records
``"listen_ends": SECONDS``. Each session's regenerated words must give the source's listening targets exactly, or the
script stops: a shard written by other generators than today's cannot be relabelled this way. A shard folder is
complete once its ``sessions.json`` is written (last), so an interrupted run is simply run again.

    python scripts/listen_ends.py data/shards/d62 data/shards/e64
    python scripts/listen_ends.py data/shards/d62 data/shards/f65 --ends 0.025
"""
import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from microturn.data.shards import listen_ends_of, session_again
from microturn.stream.layout import Layout, check_ends, listen_targets
from microturn.stream.tokenizer import default_tokenizer
from microturn.train.data import ARRAYS, read_meta, shard_dirs


def relabel(job) -> np.ndarray:
    """(info, split, layout, stored targets, ends) -> the targets with ``ends``, once the regenerated words are
    checked."""
    info, split, layout, stored, ends = job
    tl, tok = session_again(info, split).timeline, default_tokenizer()
    if not np.array_equal(listen_targets(tl, layout, tok), stored):
        raise ValueError(f"session {info['id']} ({info['family']}, seed {info['seed']}, index {info['index']}): "
                         "generated again, its words do not give the shard's listening targets")
    return listen_targets(tl, layout, tok, ends)


def copy_shard(src: Path, dst: Path, pool, ends: float) -> int:
    meta = read_meta(src / "sessions.json")
    if listen_ends_of(meta) is not None:
        raise ValueError(f"{src}: already labelled at the words' ends")
    layout, listen = Layout(**meta["layout"]), np.load(src / "listen.npy")
    jobs = [(s, meta["split"], layout, listen[s["start"] : s["start"] + s["length"]], ends)
            for s in meta["sessions"]]
    new = listen.copy()
    for s, t in zip(meta["sessions"], pool.map(relabel, jobs, chunksize=8)):
        new[s["start"] : s["start"] + s["length"]] = t
    dst.mkdir(parents=True, exist_ok=True)
    for k in ARRAYS:
        if k != "listen" and not (dst / f"{k}.npy").exists():
            os.symlink(os.path.relpath((src / f"{k}.npy").resolve(), dst), dst / f"{k}.npy")
    np.save(dst / "listen.npy", new)
    (dst / "sessions.json").write_text(json.dumps(meta | {"listen_ends": ends}))
    return int((new != listen).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="a folder of shards (linked parts are followed)")
    ap.add_argument("dst", help="where the copy goes (same folder layout)")
    ap.add_argument("--ends", type=float, default=0.0,
                    help="how far into the token it ends in a word must reach to be named there, in seconds")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    try:
        check_ends(a.ends, Layout())
    except ValueError as e:
        ap.error(f"--ends: {e}")
    src, dst = Path(a.src), Path(a.dst)
    dirs = shard_dirs(src)
    if not dirs:
        ap.error(f"no shards under {src}")
    with ProcessPoolExecutor(a.workers) as pool:
        for d in tqdm(dirs, desc="shards", unit="shard"):
            out = dst / d.relative_to(src)
            if (out / "sessions.json").exists():
                continue
            try:
                changed = copy_shard(d, out, pool, a.ends)
            except ValueError as e:  # a session that does not match, or shards relabelled already: nothing written
                sys.exit(f"{d}: {e}")
            tqdm.write(f"{out}: {changed} targets changed")


if __name__ == "__main__":
    main()
