"""Carry a checkpoint over to a tokenizer with more special tokens (they take fixed ids 0..len(SPECIALS)-1, so the
byte-level BPE's ids move up by the number added): the text embedding (tied to the text head) and the listening
head keep every old token's row at its new id; the new specials' rows start as a fresh model's would, except with
``--heard-from ID``: the text embedding's row of each heard token ``<heard:w>`` then starts as (row ID + row of
w's first token) / sqrt 2, the two tokens it stands for (session 14: ``<heard> w``, id 157, became ``<heard:w>``).

    python scripts/grow_vocab.py runs/cpu-3850/model runs/cpu-3850-v1321/model --old-specials 7
    python scripts/grow_vocab.py runs/s17-400/model runs/s17-v1350/model --old-specials 158 --heard-from 157
"""
import math
import argparse
from dataclasses import replace

import torch

from microturn.model import checkpoint
from microturn.model.model import InteractionModel
from microturn.stream.tokenizer import CUE_WORDS, SPECIALS, default_tokenizer, heard


def grow(src: str, old_specials: int, heard_from: int | None = None) -> InteractionModel:
    """The checkpoint at ``src``, written for a tokenizer with ``old_specials`` specials, carried over to today's."""
    old = checkpoint.load(src)
    tok = default_tokenizer()
    V = tok.vocab_size
    added = len(SPECIALS) - old_specials
    if old.cfg.vocab_size + added != V:
        raise SystemExit(f"{src}: vocabulary {old.cfg.vocab_size} + {added} new specials != the tokenizer's {V}")
    if heard_from is not None and not 0 <= heard_from < old_specials:
        raise SystemExit(f"--heard-from {heard_from} is not one of the source's {old_specials} specials")
    torch.manual_seed(0)
    new = InteractionModel(replace(old.cfg, vocab_size=V))
    sd, fresh = old.state_dict(), new.state_dict()
    for k, v in sd.items():
        if v.shape[:1] == (old.cfg.vocab_size,):  # text embedding, listening head weight and bias
            w = fresh[k].clone()
            w[:old_specials] = v[:old_specials]
            w[len(SPECIALS):] = v[old_specials:]
            sd[k] = w
    if heard_from is not None:
        old_emb, emb = old.state_dict()["embed.text.weight"], sd["embed.text.weight"]
        for w in CUE_WORDS:
            first = tok.encode_word(w)[0] - added  # the word's id in the source's vocabulary
            emb[heard(w)] = (old_emb[heard_from] + old_emb[first]) / math.sqrt(2)
    new.load_state_dict(sd)
    new.checkpoint_info = dict(getattr(old, "checkpoint_info", {}) or {}) | {"grown_from": src,
                                                                          "old_vocab": old.cfg.vocab_size}
    return new


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--old-specials", type=int, required=True, help="how many special tokens the source's tokenizer had")
    p.add_argument("--heard-from", type=int, help="the source's id of the two-token <heard> marker")
    a = p.parse_args()
    new = grow(a.src, a.old_specials, a.heard_from)
    checkpoint.save(new, a.dst, extra=new.checkpoint_info)
    print(f"{a.src} ({new.checkpoint_info['old_vocab']} tokens) -> {a.dst} ({new.cfg.vocab_size} tokens)")


if __name__ == "__main__":
    main()
