"""How well a checkpoint hears each kind of voice: teacher-forced on shards, the argmax accuracy of the listening head
on every audio token of a user word (``<sil>`` excluded), grouped by engine and base voice, and for espeak-ng by the
kind of variant (one of the training catalogue's, a held-out one, or a generated one); apart for the task words
(response, cue, number and Spanish words: what instructions are made of, the same in every split) and the other
words (filler sentences: held-out sentences in the validation and test splits, so new words and contexts there).

Session 8 used it to find where held-out listening fails: not on new espeak-ng voices as such (their task words are
heard as well as training voices' are) but on the other words of held-out sentences and on flite's held-out voice:

    python scripts/voices_report.py microturn/assets/model --shards data/shards/val data/shards/train/f --sessions 120
"""
import argparse
from collections import defaultdict

import torch

from microturn.data import language as lang
from microturn.data.speech import Voice, voices
from microturn.model.checkpoint import load
from microturn.stream.tokenizer import SIL, default_tokenizer
from microturn.train.data import Shards, collate


TRAINING_VARIANTS = {v.variant for v in voices("train")}


def groups(voice_id: str) -> list[str]:
    v = Voice.from_id(voice_id)
    if v.engine == "flite":
        return ["flite", f"flite {v.name}"]
    kind = ("generated, accent" if v.variant.startswith("~a") else "generated") if v.variant.startswith("~") else \
        "catalogue" if v.variant in TRAINING_VARIANTS else "held-out variant"
    return ["espeak", f"espeak {v.name}", f"espeak, {kind}"]


def task_tokens() -> torch.Tensor:
    tok = default_tokenizer()
    words = list(lang.RESPONSE_WORDS) + list(lang.CUE_WORDS) + [lang.number_words(i) for i in range(31)] \
        + list(lang.SPANISH)
    return torch.tensor(sorted({tok.encode_word(w)[0] for w in words}))


@torch.no_grad()
def report(model, shards: Shards, n: int) -> dict[tuple[str, str], list[int]]:
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    task = task_tokens()
    for i in range(0, len(shards), max(1, len(shards) // n))[:n]:
        b = collate([shards.session(i)], shards.families)
        pred, target = model(b)["listen_logits"].argmax(-1), b["listen"]
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
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load(a.checkpoint).eval()
    for path in a.shards:
        for (g, kind), (hit, n) in sorted(report(model, Shards(path), a.sessions).items()):
            print(f"{path:<24} {g:<28} {kind:<12} {hit / max(n, 1):5.0%} of {n} tokens")


if __name__ == "__main__":
    main()
