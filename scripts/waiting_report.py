"""What a checkpoint has learned of waiting (time and cue instructions), teacher-forced on held-out shards: per
family, the argmax accuracy of each kind of silent or spoken token the targets hold.

- first note: the note of an instruction's word as it is taken in (typed or by voice), i.e. picking the word;
- rehearsal: a note repeated in the free slots, copying a word noted just before (``rehearsal``: a recap,
  ``layout.recaps``) or further back (``rehearsal, far``: the first rehearsal after the notes, or after an act);
- timer, first value / later values: the micro-turns left when the countdown starts / one less each micro-turn;
- act: at the micro-turn the agent says the word, p(speak) = 1 - p(<eot>) and whether the likeliest word is right;
- false: the share of silent micro-turns of the wait where p(speak) > 0.3 and the likeliest token is a word.

    python scripts/waiting_report.py runs/note/model --families timespeak,cuespeak --sessions 16
"""
import argparse

import numpy as np
import torch

from microturn.model.checkpoint import load
from microturn.stream.tokenizer import EOT, NOTE, SPECIALS, TYPED, is_timer
from microturn.train.data import Shards, collate

KINDS = ("first note typed", "first note voice", "rehearsal", "rehearsal, far", "timer first", "timer later",
         "act p(speak)", "act word", "false")


@torch.no_grad()
def report(model, shards: Shards, family: str, n: int) -> dict[str, list[float]]:
    L = model.layout
    firsts = 2 if family == "cuespeak" else 1  # the notes an instruction starts with
    st: dict[str, list[float]] = {k: [] for k in KINDS}
    for i in [i for i in range(len(shards)) if shards.info(i)["family"] == family][:n]:
        item = shards.session(i)
        typed = bool((item["text_in"] == TYPED).any())
        b = collate([item], shards.families)
        p = model.text_logits(model.hidden(b)[:, :, L.n_in - 1 : L.n_in - 1 + L.n_out])[0].softmax(-1)
        noting, notes, timing = False, 0, False
        for t, row in enumerate(b["out"][0].tolist()):
            noting = noting and is_timer(row[0])  # a note's word may follow the next micro-turn's timer
            timing = timing and is_timer(row[0])
            for k, x in enumerate(row):
                words = p[t, k].clone()
                words[EOT] = 0
                if x == EOT:
                    if k == 0:
                        st["false"].append(float(1 - p[t, k, EOT] > 0.3 and int(words.argmax()) >= len(SPECIALS)))
                    break
                right = float(int(words.argmax()) == x)
                if is_timer(x):
                    st["timer later" if timing else "timer first"].append(right)
                    timing = True
                elif x == NOTE:
                    noting = True
                elif noting:
                    kind = f"first note {'typed' if typed else 'voice'}"
                    if notes >= firsts:  # near: the steady rehearsal, which layout.recaps marks
                        kind = "rehearsal" if item["recap"][t, k] else "rehearsal, far"
                    st[kind].append(right)
                    notes, noting = notes + 1, False
                elif x >= len(SPECIALS):  # (instructions that last get no ack since session 6)
                    st["act p(speak)"].append(float(1 - p[t, k, EOT]))
                    st["act word"].append(right)
    return st


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", default="data/shards/val")
    ap.add_argument("--families", default="timespeak,cuespeak")
    ap.add_argument("--sessions", type=int, default=16, help="per family")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, shards = load(a.checkpoint).eval(), Shards(a.shards)
    print(f"{'family':10s} " + " ".join(f"{k:>17s}" for k in KINDS))
    for fam in a.families.split(","):
        st = report(model, shards, fam, a.sessions)
        print(f"{fam:10s} " + " ".join(f"{np.mean(v):>9.0%} of {len(v):<4d}" if v else f"{'-':>17s}"
                                       for v in st.values()))


if __name__ == "__main__":
    main()
