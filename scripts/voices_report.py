"""How well a checkpoint hears each kind of voice: teacher-forced on shards, the argmax accuracy of the listening head
on every audio token of a user word (``<sil>`` excluded), grouped by engine and base voice, and for espeak-ng by the
kind of variant (one of the training catalogue's, a held-out one, or a generated one). Session 8 used it to find that
listening fails on new voices rather than on new sentences:

    python scripts/voices_report.py microturn/assets/model --shards data/shards/val data/shards/train/d --sessions 120
"""
import argparse
from collections import defaultdict

import torch

from microturn.data.speech import _ESPEAK_VARIANTS, Voice
from microturn.model.checkpoint import load
from microturn.stream.tokenizer import SIL
from microturn.train.data import Shards, collate


def groups(voice_id: str) -> list[str]:
    v = Voice.from_id(voice_id)
    if v.engine == "flite":
        return ["flite", f"flite {v.name}"]
    kind = "generated" if v.variant.startswith("~") else \
        "catalogue" if v.variant in _ESPEAK_VARIANTS["train"] else "held-out variant"
    return ["espeak", f"espeak {v.name}", f"espeak, {kind}"]


@torch.no_grad()
def report(model, shards: Shards, n: int) -> dict[str, list[int]]:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i in range(0, len(shards), max(1, len(shards) // n))[:n]:
        b = collate([shards.session(i)], shards.families)
        pred = model(b)["listen_logits"].argmax(-1)
        word = (b["listen"] != SIL) & b["valid"][..., None]
        hit, tot = int(((pred == b["listen"]) & word).sum()), int(word.sum())
        for g in ["all"] + groups(shards.info(i)["voice"]):
            acc[g][0] += hit
            acc[g][1] += tot
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", nargs="+", default=["data/shards/val"])
    ap.add_argument("--sessions", type=int, default=120, help="per shards folder, evenly spaced")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load(a.checkpoint).eval()
    for path in a.shards:
        for g, (hit, n) in sorted(report(model, Shards(path), a.sessions).items()):
            print(f"{path:<24} {g:<28} {hit / max(n, 1):5.0%} of {n} word tokens")


if __name__ == "__main__":
    main()
