"""Carry a checkpoint over to a tokenizer with more special tokens (they take fixed ids 0..len(SPECIALS)-1, so the
byte-level BPE's ids move up by the number added): the text embedding (tied to the text head) and the listening
head keep every old token's row at its new id; the new specials' rows start as a fresh model's would.

    python scripts/grow_vocab.py runs/cpu-3850/model runs/cpu-3850-v1321/model --old-specials 7
"""
import argparse
from dataclasses import replace

import torch

from microturn.model import checkpoint
from microturn.model.model import InteractionModel
from microturn.stream.tokenizer import SPECIALS, default_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--old-specials", type=int, required=True, help="how many special tokens the source's tokenizer had")
    a = p.parse_args()
    old = checkpoint.load(a.src)
    V = default_tokenizer().vocab_size
    added = len(SPECIALS) - a.old_specials
    if old.cfg.vocab_size + added != V:
        raise SystemExit(f"{a.src}: vocabulary {old.cfg.vocab_size} + {added} new specials != the tokenizer's {V}")
    torch.manual_seed(0)
    new = InteractionModel(replace(old.cfg, vocab_size=V))
    sd, fresh = old.state_dict(), new.state_dict()
    for k, v in sd.items():
        if v.shape[:1] == (old.cfg.vocab_size,):  # text embedding, listening head weight and bias
            w = fresh[k].clone()
            w[: a.old_specials] = v[: a.old_specials]
            w[len(SPECIALS):] = v[a.old_specials:]
            sd[k] = w
    new.load_state_dict(sd)
    info = dict(getattr(old, "checkpoint_info", {}) or {}) | {"grown_from": a.src, "old_vocab": old.cfg.vocab_size}
    checkpoint.save(new, a.dst, extra=info)
    print(f"{a.src} ({old.cfg.vocab_size} tokens) -> {a.dst} ({V} tokens)")


if __name__ == "__main__":
    main()
