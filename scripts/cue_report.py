"""How a checkpoint decides at the moments to act on a cue: teacher-forced on the cuespeak sessions of shards, for
every cue-list word the user says after the instruction, whether the model puts the response word first in the
micro-turn where the word ends or the next (``layout.word_ends``: where the act on a cue is). Apart for the cues
(the target acts there) and the other cue-list words (the target goes on rehearsing): a model that tells them apart
fires on nearly all of the first and nearly none of the second. And how often the listening head names those words
right at their last audio token: what the act can rest on.

Session 9 used it to find why cue scenarios fail with the instruction noted right: session 8's model put the
response word first after 54 % of the cues and 58 % of the other cue words on training shards (part h), 62 % and
75 % on the validation shards: it did not tell them apart.

    python scripts/cue_report.py microturn/assets/model --shards data/shards/val data/shards/train/h --sessions 60

The same run counts the listening head naming those words right (validation, part h): session 8's model 52 % and
53 %, session 9's 66 % and 61 %.
"""
import argparse

import numpy as np
import torch

from microturn.data import language as lang
from microturn.model.checkpoint import load
from microturn.stream.layout import word_ends
from microturn.stream.tokenizer import NOTE, default_tokenizer
from microturn.train.data import Shards, collate


def decisions(model, shards: Shards, n: int) -> dict[str, list[int]]:
    """{"cue": [fired, n], "other cue word": [fired, n], "heard": [named, n]} over the first ``n`` cuespeak sessions
    of ``shards``; "heard": the listening head names the cue-list word right at its last audio token."""
    tok = default_tokenizer()
    cue_words = {tok.encode_word(w)[0] for w in lang.CUE_WORDS}
    responses = {tok.encode_word(w)[0] for w in lang.RESPONSE_WORDS}
    got = {"cue": [0, 0], "other cue word": [0, 0], "heard": [0, 0]}
    sessions = [i for i in range(len(shards)) if shards.info(i)["family"] == "cuespeak"][:n]
    for i in sessions:
        item = shards.session(i)
        out, heard = item["out"], item["listen"]
        notes = [(t, int(out[t, 1])) for t in range(len(out)) if out[t, 0] == NOTE]
        said = [int(out[t, 0]) for t in range(len(out)) if out[t, 0] in responses]
        noted = [w for _, w in notes if w in responses]
        if len(notes) < 2 or not (said or noted):
            continue
        r, instructed = (said or noted)[0], notes[1][0]  # the response word; both words noted by then
        with torch.no_grad():
            res = model(collate([item], shards.families))
        first = res["out_logits"][0, :, 0].argmax(-1).numpy()
        named = res["listen_logits"][0].argmax(-1).numpy()  # [T, n_audio]
        for m, k in zip(*np.nonzero(word_ends(heard))):
            if m <= instructed or heard[m, k] not in cue_words:
                continue
            got["heard"][0] += int(named[m, k] == heard[m, k])
            got["heard"][1] += 1
            window = list(range(m, min(len(out), m + 2)))
            kind = "cue" if any(out[u, 0] == r for u in window) else "other cue word"
            got[kind][0] += int(any(first[u] == r for u in window))
            got[kind][1] += 1
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", nargs="+", default=["data/shards/val"])
    ap.add_argument("--sessions", type=int, default=60, help="cuespeak sessions per shards folder")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load(a.checkpoint).eval()
    for path in a.shards:
        got = decisions(model, Shards(path), a.sessions)
        named, n = got.pop("heard")
        print(f"{path:<24} cue-list words named right at their last audio token: {named / max(n, 1):5.0%} of {n}")
        for kind, (fired, n) in got.items():
            print(f"{path:<24} {kind:<15} response word first at {fired / max(n, 1):5.0%} of {n}")


if __name__ == "__main__":
    main()
