"""Bring training shards written with an older tokenizer or older targets up to date, in place:

- every token id of the byte-level BPE moves up by the number of specials added since the shard was written (its
  ``sessions.json`` records ``specials``; ``--old-specials`` for shards older than that record);
- the sessions of the families whose targets changed (``--families``, default cuespeak) are rendered again from
  (family, seed, split, difficulty, index, voices, accents, drill), which is deterministic: their user audio must
  come out the same bytes and the agent the same words, or the script stops; their out tokens, agent mel and the
  other token arrays are overwritten.

    python scripts/relayout_shards.py data/shards/train data/shards/val

Session 4 (timers and notes: 7 -> 158 specials) laid out timespeak and cuespeak again; session 14 (one heard token
per cue-list word, 158 -> 187 specials, the response in the heard word's micro-turn) cuespeak, then cuespeak again
with ``--again`` (the cue noted as its heard token). A shard is marked
up to date only once its sessions are all rendered again, so an interrupted run is simply run again. Shards written
by today's ``microturn synth --shards`` need none of this.
"""
import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from microturn.data.shards import listen_ends_of, render_again
from microturn.stream.layout import Layout, decode_outputs
from microturn.stream.tokenizer import SPECIALS, default_tokenizer
from microturn.train.data import shard_dirs

TOKEN_ARRAYS = ("text_in", "out", "listen")


def _words(out, layout, tok, two_token_heard: bool = False) -> list[str]:
    """The agent's said words (the ack "okay" aside, which session 6 dropped); ``two_token_heard``: the out tokens
    were laid out before session 14, when ``<heard>`` (id 157, now ``<heard:apple>``) came before its word."""
    out = np.array(out)
    if two_token_heard:
        flat = out.reshape(-1)
        flat[1:][flat[:-1] == 157] = 157
    return [w.w for w in decode_outputs(out, layout, tok)[0] if w.w != "okay"]


def update(d: Path, old_specials: int, families: set[str], workers: int, again: bool = False) -> str:
    meta_path = d / "sessions.json"
    meta = json.loads(meta_path.read_text())
    old = meta.get("specials", old_specials)
    if old != len(SPECIALS):
        shift = len(SPECIALS) - old
        for k in TOKEN_ARRAYS:
            arr = np.load(d / f"{k}.npy", mmap_mode="r+")
            arr[arr >= old] += shift
            arr.flush()
        meta |= {"specials": len(SPECIALS), "pending": sorted(families), "pending_from": old}  # targets not yet
        meta_path.write_text(json.dumps(meta))
    elif not meta.get("pending") and not again:
        return "up to date"
    fams, was = set(meta.pop("pending", None) or families), meta.pop("pending_from", len(SPECIALS))
    sessions = [s for s in meta["sessions"] if s["family"] in fams]
    layout, tok = Layout(**meta["layout"]), default_tokenizer()
    arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r+") for k in ("audio", "mel", *TOKEN_ARRAYS)}
    with ProcessPoolExecutor(workers) as ex:
        render = partial(render_again, split=meta["split"], layout=layout, listen_ends=listen_ends_of(meta))
        again = ex.map(render, sessions, chunksize=4)
        for s, new in zip(sessions, tqdm(again, total=len(sessions), desc=str(d))):
            n = s["length"]
            rows = slice(s["start"], s["start"] + n)
            if len(new["out"]) != n or not np.array_equal(new["audio"], arrays["audio"][rows]):
                raise SystemExit(f"{d}: {s['id']} rendered again to other user audio ({len(new['out'])} micro-turns, "
                                 f"not {n}): the generator is no longer the one that wrote it")
            if np.array_equal(arrays["out"][rows], new["out"]):  # done before an interruption
                continue
            if _words(arrays["out"][rows], layout, tok, was == 158) != _words(new["out"], layout, tok):
                raise SystemExit(f"{d}: {s['id']} rendered again with other agent words")
            for k in ("mel", *TOKEN_ARRAYS):
                arrays[k][rows] = new[k]
    for arr in arrays.values():
        arr.flush()
    meta_path.write_text(json.dumps(meta))
    return f"ids at {len(SPECIALS)} specials (from {old}), {len(sessions)} {'/'.join(sorted(fams))} sessions " \
           "rendered again"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+")
    p.add_argument("--old-specials", type=int, default=7, help="the specials of shards that do not record theirs")
    p.add_argument("--families", default="cuespeak")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--again", action="store_true", help="render the families again in shards already up to date "
                                                        "(after a change to their targets)")
    a = p.parse_args()
    for root in a.roots:
        for meta_path in (d / "sessions.json" for d in shard_dirs(root)):
            done = update(meta_path.parent, a.old_specials, set(a.families.split(",")), a.workers, a.again)
            print(f"{meta_path.parent}: {done}")


if __name__ == "__main__":
    main()
