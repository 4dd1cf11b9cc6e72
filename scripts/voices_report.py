"""How well a checkpoint hears each kind of voice: teacher-forced on shards, the argmax accuracy of the listening head
on every audio token of a user word (``<sil>`` excluded), grouped by engine and base voice, and for espeak-ng by the
kind of variant (one of the training catalogue's, a held-out one, or a generated one); apart for the task words
(response, cue, number and Spanish words: what instructions are made of, the same in every split) and the other
words (filler sentences: held-out sentences in the validation and test splits, so new words and contexts there).

Session 8 used it to find where held-out listening fails: not on new espeak-ng voices as such (their task words are
heard as well as training voices' are) but on the other words of held-out sentences and on flite's held-out voice:

    python scripts/voices_report.py microturn/assets/model --shards data/shards/val data/shards/train/f --sessions 120

``--shelf L`` hears the shards with the upper half of the mel channels moved L levels (6 dB each; ``--shelf-from 0``:
all of them, a gain), ``--warp A`` with
the channels warped as training's augmentation does (``codecs.dmel.warp_channels``): how the listening stands up to
a microphone's colour or a new vocal tract. Session 30: the bundled model names 77 % of held-out espeak-ng voices'
task words right, 34 % with ``--shelf 1``, 26 % with ``--shelf -1``; flite's held-out awb 48 % and 30-49 % warped
by 0.8-1.2, so its voice, not its vocal-tract length, is what is not heard:

    python scripts/voices_report.py microturn/assets/model --shards data/shards/val/cue1 --sessions 96 --shelf 1

``--warp 0.9,0.95,1,1.05,1.1`` hears each session through each warp and names the word of their mean probability,
as serving does with ``Sampling.warps``. Session 43, on all 176 sessions of data/shards/val: task words 76.4 % heard
as they came, 77.9 % through those five (flite's held-out awb 60.2 and 63.9 %, espeak-ng 85.1 and 85.4 %):

    python scripts/voices_report.py microturn/assets/model --sessions 176 --warp 0.9,0.95,1,1.05,1.1
"""
import argparse
from collections import defaultdict

import numpy as np
import torch

from microturn.codecs import dmel
from microturn.data import language as lang
from microturn.data.speech import Voice, voices
from microturn.model.checkpoint import load
from microturn.model.model import Sampling
from microturn.stream.tokenizer import SIL, default_tokenizer
from microturn.train.data import Shards, collate, colour


TRAINING_VARIANTS = {v.variant for v in voices("train")}


def groups(voice_id: str) -> list[str]:
    v = Voice.from_id(voice_id)
    if v.engine != "espeak":
        return [v.engine, f"{v.engine} {v.name}"]
    kind = ("generated, accent" if v.variant.startswith("~a") else "generated") if v.variant.startswith("~") else \
        "catalogue" if v.variant in TRAINING_VARIANTS else "held-out variant"
    return ["espeak", f"espeak {v.name}", f"espeak, {kind}"]


def task_tokens() -> torch.Tensor:
    tok = default_tokenizer()
    words = list(lang.RESPONSE_WORDS) + list(lang.CUE_WORDS) + [lang.number_words(i) for i in range(31)] \
        + list(lang.SPANISH)
    return torch.tensor(sorted({tok.encode_word(w)[0] for w in words}))


def hear_through(item: dict, shelf: float = 0.0, warp: float = 1.0, shelf_from: int = dmel.N_MELS // 2) -> dict:
    """The session ``item`` with its input bins warped by ``warp`` and the channels from ``shelf_from`` up moved
    ``shelf`` levels (``train.data.colour``: silence stays silence)."""
    x = item["audio"].astype(np.int16)
    if warp != 1.0:
        x = dmel.warp_channels(x, warp)
    if shelf:
        x = colour(x, np.where(np.arange(dmel.N_MELS) >= shelf_from, shelf, 0.0))
    return item | {"audio": x.astype(np.uint8)}


@torch.no_grad()
def report(model, shards: Shards, n: int, warps=(1.0,), **hear) -> dict[tuple[str, str], list[int]]:
    """[hits, tokens] per (voice group, task or other words); ``hear``: ``hear_through``'s options. Several
    ``warps``: each session heard through each, the word the mean of their probabilities names (as serving with
    ``Sampling.warps`` decides)."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    task = task_tokens()
    for i in range(0, len(shards), max(1, len(shards) // n))[:n]:
        probs = 0
        for w in warps:
            b = collate([hear_through(shards.session(i), warp=w, **hear)], shards.families)
            probs = probs + model(b)["listen_logits"].softmax(-1)
        pred, target = probs.argmax(-1), b["listen"]
        word = (target != SIL) & b["valid"][..., None]
        is_task = torch.isin(target, task)
        for g in ["all"] + groups(shards.info(i)["voice"]):
            for kind, mask in (("task words", word & is_task), ("other words", word & ~is_task)):
                acc[g, kind][0] += int(((pred == target) & mask).sum())
                acc[g, kind][1] += int(mask.sum())
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", nargs="+", default=["data/shards/val"])
    ap.add_argument("--sessions", type=int, default=120, help="per shards folder, evenly spaced")
    ap.add_argument("--shelf", type=float, default=0.0, help="move the upper half of the mel channels this many levels")
    ap.add_argument("--shelf-from", type=int, default=dmel.N_MELS // 2,
                    help="the first mel channel --shelf moves (0: the whole spectrum, a gain)")
    ap.add_argument("--warp", default="1", help="warp the channels by this vocal-tract scale; several, "
                    "comma-separated: hear through each and take the word of their mean probability")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load(a.checkpoint).eval()
    for path in a.shards:
        for (g, kind), (hit, n) in sorted(report(model, Shards(path), a.sessions, shelf=a.shelf,
                                                     warps=Sampling.parse_warps(a.warp) or (1.0,),
                                                     shelf_from=a.shelf_from).items()):
            print(f"{path:<24} {g:<28} {kind:<12} {hit / max(n, 1):5.0%} of {n} tokens")


if __name__ == "__main__":
    main()
