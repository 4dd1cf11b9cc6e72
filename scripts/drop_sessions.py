"""Take the sessions of some families out of training shards, in place, after a change to how those families are
generated (write their new sessions as a new part with ``microturn synth --shards``):

    python scripts/drop_sessions.py data/shards/train data/shards/val --families user_backchannel

Linked parts under a root are changed where they lie. Only each shard's ``sessions.json`` changes (the reader finds a
session by its start and length, so the arrays stay as they are); the old list is kept beside it as
``sessions.before-drop-FAMILIES.json`` (session 10 named its backups ``sessions.before-drop.json``), and a drop whose
backup is already there is refused, so no backup is overwritten. Shards written from scratch by today's generators
need none of this.
"""
import argparse
import json

from microturn.train.data import shard_dirs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+")
    p.add_argument("--families", required=True, help="comma-separated families whose sessions are taken out")
    a = p.parse_args()
    fams = set(a.families.split(","))
    for root in a.roots:
        paths = [d / "sessions.json" for d in shard_dirs(root)]
        if not paths:
            raise SystemExit(f"no shards under {root}")
        for path in paths:
            backup = path.with_name(f"sessions.before-drop-{'-'.join(sorted(fams))}.json")
            meta = json.loads(path.read_text())
            kept = [s for s in meta["sessions"] if s["family"] not in fams]
            if len(kept) == len(meta["sessions"]):
                continue
            if backup.exists():
                raise SystemExit(f"{backup} exists: {path.parent} was dropped from before; restore it, or move the "
                                 "backup away")
            backup.write_text(path.read_text())
            print(f"{path.parent}: {len(meta['sessions']) - len(kept)} of {len(meta['sessions'])} sessions taken out")
            path.write_text(json.dumps(meta | {"sessions": kept}))


if __name__ == "__main__":
    main()
