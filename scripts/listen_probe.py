"""How well a checkpoint's weights can hear when hearing is all they are trained for: fine-tune a copy on the
listening loss alone (the task words weighed ``--task-listen``, the input audio altered as training alters it) and
score its listening head with ``listening_report.report`` as it goes, on shards of training voices and of held-out
ones. If the head soon hears far better than the checkpoint, the weights have room for it and the joint loss holds
it back (``microturn train --listen-scale`` weighs the listening up). Nothing is saved.

Train and score on shards labelled as the checkpoint was trained (``microturn synth --listen-ends``, or not): on
others the probe measures the relabelling. Session 65's first probe did exactly that: the bundled model, trained
on the old labels, names 79 % of the cue words of training voices at their end tokens on shards made with
``--listen-ends 0.025`` and 95 % on its own labels, and 100 steps of the probe on 0.025 shards "raised" it to 96 %
(docs/training.md, session 65).

    microturn synth --out data/shards/probe0-train --shards --split train --per-family 1500 \
        --families translate,cuespeak --seed 78
    microturn synth --out data/shards/diag0-train --shards --split train --per-family 300 \
        --families translate,cuespeak --seed 77                         # (and --split val: data/shards/diag0-val)
    python scripts/listen_probe.py microturn/assets/model --train data/shards/probe0-train \
        --score data/shards/diag0-train,data/shards/diag0-val --steps 100
"""
import argparse
import time

import numpy as np
import torch

from listening_report import report
from microturn.model.checkpoint import load
from microturn.train.config import TrainConfig
from microturn.train.data import Shards, augment, collate
from microturn.train.loop import listen_weights

KINDS = ("response word", "cue word", "number word", "other")


def score(model, shards: dict, sessions: int, families: tuple) -> dict:
    """{folder: {kind: [right, scored]}}: the last block's listening head on each folder's spoken sessions."""
    model.eval()
    tap = max(1, model.cfg.n_layer - 1)  # (report also reads a block below; only the last is shown)
    got = {name: {k: v for (b, k), v in report(model, sh, sessions, tap, families=families).items()
                  if b == "last block" and k in KINDS} for name, sh in shards.items()}
    model.train()
    return got


def probe(model, train: Shards, shards: dict, steps: int, every: int = 100, batch: int = 16, lr: float = 3e-4,
          task_listen: float = 6.0, seed: int = 0, families=("translate", "cuespeak"), sessions: int = 150,
          log=print) -> tuple[list[float], dict]:
    """Train ``model`` on the listening loss alone; returns each step's loss and the scores at step 0 and every
    ``every`` steps (and the last), {step: score(...)}."""
    weight = listen_weights(TrainConfig(task_listen=task_listen), model.cfg.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    scores, losses, t0 = {0: score(model, shards, sessions, families)}, [], time.time()
    show(log, 0, scores[0])
    for step in range(1, steps + 1):
        items = []
        for i in rng.choice(len(train), min(batch, len(train)), replace=False):
            it = train.session(int(i))
            it["audio"] = augment(it["audio"], rng)
            items.append(it)
        for g in opt.param_groups:
            g["lr"] = lr * min(1, step / 10)  # 10 steps of warm-up
        loss = model(collate(items, train.families), listen_weight=weight)["listen"].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            log(f"step {step}: listening loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
        if step % every == 0 or step == steps:
            scores[step] = score(model, shards, sessions, families)
            show(log, step, scores[step])
    return losses, scores


def show(log, step: int, got: dict) -> None:
    for name, cells in got.items():
        log(f"step {step}  {name}: " + ", ".join(f"{k} {100 * h / max(n, 1):.0f}% of {n}"
                                                 for k, (h, n) in cells.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--train", required=True, help="shards to train the listening on")
    ap.add_argument("--score", required=True, help="comma-separated shard folders to score on")
    ap.add_argument("--families", default="translate,cuespeak", help="the spoken sessions scored (comma-separated)")
    ap.add_argument("--sessions", type=int, default=150, help="spoken sessions scored per folder")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--every", type=int, default=100, help="score every this many steps")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--task-listen", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.steps < 1 or a.every < 1 or a.batch < 1 or a.sessions < 1 or not a.lr > 0 or not a.task_listen > 0:
        ap.error("--steps, --every, --batch and --sessions must be 1 or more; --lr and --task-listen positive")
    torch.manual_seed(a.seed)
    probe(load(a.checkpoint).float(), Shards(a.train), {p: Shards(p) for p in a.score.split(",")}, a.steps, a.every,
          a.batch, a.lr, a.task_listen, a.seed, tuple(a.families.split(",")), a.sessions,
          log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
