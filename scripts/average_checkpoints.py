"""Average the weights of checkpoints of one lineage (a model and its fine-tunes): a "model soup", which often
keeps what each fine-tune learned better than any one of them does (Wortsman et al., 2022, WiSE-FT).

    python scripts/average_checkpoints.py runs/s12/model runs/s16/model --weights 0.5,0.5 --out runs/soup/model

The checkpoints must share their architecture, except that some may lack the audio front-end (``audio_conv``), or
some of its layers, that a later fine-tune was given: its branches start at zero (``embed.FrameConv``), so a
checkpoint without them is the same model with zero weights there, and is averaged as such. Writes float32 weights;
the config is the first checkpoint with the most front-end layers, with the soup's recipe under ``extra``: the
checkpoints, their weights, and each one's own ``extra`` (how it was trained or made), so that a soup that is bundled
still says where its weights came from.
"""
import argparse
from dataclasses import replace

import torch

from microturn.model import checkpoint
from microturn.model.model import InteractionModel

ZERO_START = "embed.audio.conv."  # tensors a checkpoint without the front-end lacks and that start at zero


def average(paths: list[str], weights: list[float]) -> InteractionModel:
    if len(paths) != len(weights) or len(paths) < 2:
        raise SystemExit("give two or more checkpoints and one weight per checkpoint")
    if abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
        raise SystemExit(f"the weights must be non-negative and sum to 1, got {weights}")
    models = [checkpoint.load(p) for p in paths]
    base = max(models, key=lambda m: m.cfg.audio_conv)
    for p, m in zip(paths, models):
        same_but_front_end = replace(m.cfg, audio_conv=base.cfg.audio_conv) == base.cfg
        if not same_but_front_end:  # (fewer front-end layers: the missing ones are zeros, below)
            raise SystemExit(f"{p}: its architecture differs from the others' ({m.cfg} against {base.cfg})")
    out = InteractionModel(base.cfg)
    target = out.state_dict()
    soup = {k: torch.zeros_like(v) if v.is_floating_point() else base.state_dict()[k] for k, v in target.items()}
    for p, m, w in zip(paths, models, weights):
        sd = m.state_dict()
        for k, v in soup.items():
            if k not in sd and not k.startswith(ZERO_START):
                raise SystemExit(f"{p} lacks {k}, which does not start at zero")
            if k in sd and v.is_floating_point():
                v += w * sd[k].float()
    out.load_state_dict(soup)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--weights", help="comma-separated, summing to 1 (default: equal)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    w = [float(x) for x in a.weights.split(",")] if a.weights else [1 / len(a.checkpoints)] * len(a.checkpoints)
    model = average(a.checkpoints, w)
    sources = [checkpoint.read_config(p)[1] for p in a.checkpoints]
    checkpoint.save(model, a.out, extra={"soup": {"checkpoints": a.checkpoints, "weights": w, "sources": sources}})
    print(f"wrote {a.out}: {' + '.join(f'{x:g} x {p}' for x, p in zip(w, a.checkpoints))}")


if __name__ == "__main__":
    main()
