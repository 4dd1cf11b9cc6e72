"""Whether a checkpoint still replies after the first moment to reply has passed: held silent, teacher-forced.

Each session (generated on the fly, the validation split's voices and sentences by default) is played with the
agent's side removed, so the agent stays silent throughout; at the micro-turn where its first reply would start
(where the generated session's first agent word starts: the first boundary it may, ``world.Builder.reply_at``) and
at the k micro-turns after it, the model's p(speak) = 1 - p(<eot>) of the first out slot is read. A model trained
only on replies that start on that boundary learns that a reply let pass is never made: its p(speak) falls to about
zero a micro-turn later (session 45: the bundled model on the test set's "What colour is silver", 0.37 then 0.00).
Printed per family: the mean p(speak) at k = 0, 1, 2, 3 and the share above the speak threshold.

    python scripts/reply_report.py microturn/assets/model --sessions 40
"""
import argparse

import numpy as np
import torch

from microturn.data.world import generate
from microturn.model.checkpoint import load
from microturn.model.model import Sampling
from microturn.stream.layout import encode_timeline
from microturn.stream.timeline import Timeline
from microturn.stream.tokenizer import EOT, default_tokenizer
from microturn.train.data import collate

FAMILIES = ("turn", "pause", "refusal")  # sessions whose agent side is their replies alone
AFTER = 4  # micro-turns read: the reply's own and three after it


def silenced(tl: Timeline) -> Timeline:
    """The timeline without the agent: no words, no audio, no events (these families' agents only reply)."""
    return Timeline(duration=tl.duration, user_audio=tl.user_audio, agent_audio=np.zeros_like(tl.agent_audio),
                    video=tl.video, fps=tl.fps, words=tl.words_of("user") + tl.words_of("other"), text=tl.text,
                    events=[], meta=tl.meta)


@torch.no_grad()
def profile(model, family: str, n: int, seed: int, split: str) -> np.ndarray:
    """[sessions, AFTER] p(speak) from each session's first reply moment on, held silent."""
    L, tok, rows = model.layout, default_tokenizer(), []
    for i in range(n):
        s = generate(family, seed, split, 1.0, i)
        # generated without late replies, the agent's first word starts on the first moment it may reply; that
        # word is said from the micro-turn after the one that decides it
        r = int(round(s.timeline.words_of("agent")[0].start / L.delta)) - 1
        item = encode_timeline(silenced(s.timeline), L, tok) | {"family": family}
        if r + AFTER > len(item["clock"]):
            continue
        b = collate([item], [family])
        logits = model.text_logits(model.hidden(b)[:, :, L.n_in - 1 : L.n_in])[0, :, 0]
        rows.append((1 - logits.softmax(-1)[:, EOT])[r : r + AFTER].numpy())
    return np.array(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--sessions", type=int, default=40, help="sessions of each family")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--split", default="val", choices=["train", "val", "test"])
    ap.add_argument("--families", default=",".join(FAMILIES))
    a = ap.parse_args()
    fams = a.families.split(",")
    if bad := [f for f in fams if f not in FAMILIES]:
        ap.error(f"{', '.join(bad)}: only {', '.join(FAMILIES)} (the families whose agents only reply)")
    if a.sessions < 1:
        ap.error("--sessions must be at least 1")
    torch.set_num_threads(1)
    model = load(a.checkpoint)
    th = Sampling.of(model).speak_threshold
    print(f"{a.checkpoint}: p(speak) held silent, k micro-turns after the first reply's moment "
          f"(mean; share above the threshold {th:g})")
    for fam in fams:
        p = profile(model, fam, a.sessions, a.seed, a.split)
        cells = [f"k={k}: {p[:, k].mean():.2f} ({(p[:, k] > th).mean():.0%})" for k in range(AFTER)] if len(p) else []
        print(f"  {fam:8s} n={len(p):3d}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
