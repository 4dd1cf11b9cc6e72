"""Time and peak memory of a run's training steps taken whole and in pieces (``microturn train --accum``).

Replays steps of a run's schedule (its ``train_config.json``: the same shards, seed, mix, buckets, so the same
batches) on one process, from the run's --init weights, with the given --accum, and prints each step's sessions,
real micro-turns, padded shape and time, then the total and the process's peak resident memory. Run it once per
--accum (the peak is the process's):

    for k in 1 2 4; do OMP_NUM_THREADS=1 python scripts/accum_memory.py runs/f48 --accum $k --steps 60 66; done
"""
import argparse
import json
import resource
import time
from dataclasses import fields

import torch

from microturn.model import checkpoint
from microturn.train.config import TrainConfig
from microturn.train.data import Shards
from microturn.train.loop import listen_weights, optimizer, step_batches, train_step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run's folder (its train_config.json)")
    p.add_argument("--accum", type=int, default=1, help="pieces per step")
    p.add_argument("--steps", type=int, nargs=2, default=(60, 66), metavar=("FIRST", "END"),
                   help="the schedule's steps to replay, counted from 0 (END excluded)")
    p.add_argument("--rank", type=int, default=0, help="whose batches (a run of several processes)")
    p.add_argument("--world", type=int, default=1, help="how many processes the run had")
    a = p.parse_args()
    saved = json.load(open(f"{a.run}/train_config.json"))
    c = TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})
    c.accum = a.accum
    c.check()
    torch.set_num_threads(1)
    model = checkpoint.load(c.init).train()
    batches = step_batches(c, Shards(c.data), model.cfg, a.rank, a.world)
    listen_weight = listen_weights(c, model.cfg.vocab_size)
    opt = optimizer(model, c, torch.device("cpu"))
    total = 0.0
    for step in range(*a.steps):
        batch = batches[step]
        t = time.perf_counter()
        train_step(model, model, opt, batch, c, listen_weight)
        total += time.perf_counter() - t
        print(f"step {step + 1}: {len(batch['valid'])} sessions, {int(batch['valid'].sum())} micro-turns, padded "
              f"{tuple(batch['valid'].shape)}, {time.perf_counter() - t:.1f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # (Linux: kB)
    print(f"--accum {c.accum}: {total:.1f} s for steps {a.steps[0] + 1}-{a.steps[1]}, peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
