"""Bring training shards written before the silent tokens (``<note>``, timers) up to date, in place:

- every token id of the byte-level BPE moves up by the number of specials added (``--old-specials``);
- the out targets of the families whose targets changed (``--families``, default timespeak and cuespeak) are laid
  out again from their sessions, which are regenerated from (family, seed, split, difficulty, index): deterministic,
  so the audio and every other array stay as they are (checked: same length, same words said).

    python scripts/relayout_shards.py data/shards/train data/shards/val --old-specials 7

Shards written by today's ``microturn synth --shards`` need none of this.
"""
import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from microturn.data.world import generate
from microturn.stream.layout import Layout, decode_outputs, out_schedule
from microturn.stream.tokenizer import SPECIALS, default_tokenizer


def _relay(job):
    info, split, layout = job
    s = generate(info["family"], info["seed"], split, info["difficulty"], info["index"],
                 info.get("generated_voices", 0.0), info.get("generated_accents", 0.0))
    out = out_schedule(s.timeline, layout, default_tokenizer())
    return info["start"], out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+")
    p.add_argument("--old-specials", type=int, required=True)
    p.add_argument("--families", default="timespeak,cuespeak")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--again", action="store_true", help="lay the families out again in shards already up to date "
                                                        "(after a change to their targets)")
    a = p.parse_args()
    shift = len(SPECIALS) - a.old_specials
    tok = default_tokenizer()
    fams = set(a.families.split(","))
    for root in a.roots:
        for meta_path in sorted(Path(root).glob("**/sessions.json")):
            d = meta_path.parent
            meta = json.loads(meta_path.read_text())
            if meta.get("specials") == len(SPECIALS) and not a.again:
                print(f"{d}: up to date")
                continue
            layout = Layout(**meta["layout"])
            if not meta.get("ids_moved"):
                for k in ("text_in", "out", "listen"):
                    arr = np.load(d / f"{k}.npy", mmap_mode="r+")
                    arr[arr >= a.old_specials] += shift
                    arr.flush()
                meta["ids_moved"] = True
                meta_path.write_text(json.dumps(meta))
            out = np.load(d / "out.npy", mmap_mode="r+")
            split = meta["split"]
            sessions = [s for s in meta["sessions"] if s["family"] in fams]
            jobs = [(s, split, layout) for s in sessions]
            with ProcessPoolExecutor(a.workers) as ex:
                for (start, new), s in zip(tqdm(ex.map(_relay, jobs, chunksize=4), total=len(jobs), desc=str(d)), sessions):
                    n = s["length"]
                    if len(new) != n:
                        raise SystemExit(f"{d}: {s['id']} regenerated to {len(new)} micro-turns, not {n}")
                    old_words = [w.w for w in decode_outputs(np.asarray(out[start:start + n]), layout, tok)[0]]
                    new_words = [w.w for w in decode_outputs(new, layout, tok)[0]]
                    if [w for w in old_words if w != "okay"] != [w for w in new_words if w != "okay"]:
                        raise SystemExit(f"{d}: {s['id']} regenerated differently: {old_words} vs {new_words}")
                    out[start:start + n] = new
            out.flush()
            meta["specials"] = len(SPECIALS)
            meta_path.write_text(json.dumps(meta))
            print(f"{d}: ids moved up by {shift}, {len(jobs)} sessions laid out again")


if __name__ == "__main__":
    main()
