"""Each word of the translate sessions, heard and said: teacher-forced on shards, whether the listening head names the
English word at its last labelled audio token (heard) and whether the out slot of the Spanish word's first token
writes it (said), counted by the user's voice (``Voice.kind``: espeak-ng voices together, the other engines' by
voice name). A translation is a word the model must hear and then say, so its accuracy per word, by voice, is what
the family's pass rate follows (a session passes only with every word right: docs/training.md, session 65).

    microturn synth --out data/shards/diag0-val --shards --split val --per-family 300 --families translate,cuespeak \\
        --seed 77
    python scripts/translate_report.py microturn/assets/model data/shards/diag0-val --sessions 300

The said column does not depend on how the shards' listening targets were labelled (``--listen-ends``); the heard
column does: score a checkpoint on shards labelled as it was trained.
"""
import argparse
from collections import Counter

import torch

from microturn.data import language as lang
from microturn.data.speech import Voice
from microturn.model.checkpoint import load
from microturn.stream.tokenizer import default_tokenizer
from microturn.train.data import Shards, collate


@torch.no_grad()
def report(model, shards: Shards, sessions: int) -> Counter:
    """{(voice, heard, said): words} over the first ``sessions`` translate sessions (heard, said: booleans). The
    k-th English word heard is paired with the k-th Spanish word said; a session where they do not pair up (a word
    too short to be given an audio token) counts its words under ``(voice, None, None)``."""
    tok = default_tokenizer()
    english = {tok.encode_word(w.lower())[0]: w.lower() for w in lang.SPANISH}
    spanish = {tok.encode_word(s)[0]: e.lower() for e, s in lang.SPANISH.items()}
    got, done = Counter(), 0
    for i in range(len(shards)):
        if shards.info(i)["family"] != "translate":
            continue
        b = collate([shards.session(i)], shards.families)
        r = model(b)
        target, pred = b["listen"][0].flatten().tolist(), r["listen_logits"][0].argmax(-1).flatten().tolist()
        heard = [(english[g], p == g) for j, (g, p) in enumerate(zip(target, pred))
                 if g in english and (j + 1 == len(target) or target[j + 1] != g)]
        out, wrote = b["out"][0].flatten().tolist(), r["out_logits"][0].flatten(0, 1).argmax(-1).tolist()
        said = [(spanish[g], w == g) for g, w in zip(out, wrote) if g in spanish]
        voice = Voice.from_id(shards.info(i)["voice"]).kind
        if [w for w, _ in heard] != [w for w, _ in said]:
            got[voice, None, None] += len(said)
        else:
            for (_, h), (_, s) in zip(heard, said):
                got[voice, h, s] += 1
        done += 1
        if done == sessions:
            break
    return got


def table(got: Counter) -> str:
    rows = ["voice        words  heard  said   said, misheard  said wrong, heard"]
    for voice in sorted({v for v, _, _ in got}):
        n = sum(c for (v, h, _), c in got.items() if v == voice and h is not None)
        heard = sum(c for (v, h, _), c in got.items() if v == voice and h)
        said = sum(c for (v, h, s), c in got.items() if v == voice and s)
        rows.append(f"{voice:12s} {n:5d}  {100 * heard / max(n, 1):4.1f}%  {100 * said / max(n, 1):4.1f}%  "
                    f"{got[voice, False, True]:14d}  {got[voice, True, False]:17d}"
                    + (f"  ({got[voice, None, None]} unpaired)" if got[voice, None, None] else ""))
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("shards")
    ap.add_argument("--sessions", type=int, default=300, help="translate sessions scored")
    a = ap.parse_args()
    if a.sessions < 1:
        ap.error("--sessions must be 1 or more")
    print(table(report(load(a.checkpoint).float().eval(), Shards(a.shards), a.sessions)))


if __name__ == "__main__":
    main()
