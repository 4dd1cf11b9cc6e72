"""How a checkpoint handles cues, teacher-forced on the cuespeak sessions of shards. Since session 14 the agent
writes one heard token for each cue-list word it hears while it waits on a cue (``<heard:pencil>``) and, if the word
was the cue, says the response in the next slot of the same micro-turn; so the report splits the decision in its
two parts:

- hearing: at the micro-turns where the target writes a heard token, how often the model puts a heard token first,
  and the right one; and how often it puts a heard token first anywhere else (false alarms);
- comparing: in the next slot, the heard token given, how often it puts the response word there after the cue (the
  target acts) and after the other cue-list words (the target ends the micro-turn). A model that compares fires on
  nearly all of the first and nearly none of the second;
- reading: the same moments with the heard token swapped, in the out stream the model reads, for the cue's and for
  another cue-list word's, the audio left as it is. A model whose decision reads the heard token acts on the first
  and not on the second; one that decides from the audio alone, or not at all, scores the two alike.

    python scripts/cue_report.py microturn/assets/model --shards data/shards/val/cue --sessions 16

Sessions 11-13 wrote ``<heard> pencil`` (two tokens) and acted a micro-turn later; their models did not read the
heard word: session 12's (runs/s16) put the response first after 77.6 % of the heard words with either swap, the
response words' mean probability 57.4 % against 57.6 % (session 13's bundled model: 42.9 / 44.9 % and 50.5 /
50.6 %). Before session 11 the model decided straight from the audio, and this report measured the response word
first where a cue-list word ends: session 8's model 54 % after cues and 58 % after other cue words (training part
h), session 10's 21 % and 20 % on the validation shards: it did not tell them apart.
"""
import argparse

import numpy as np
import torch

from microturn.data import language as lang
from microturn.model.checkpoint import load
from microturn.stream.tokenizer import NOTE, default_tokenizer, heard, is_heard
from microturn.train.data import Shards, collate


def decisions(model, shards: Shards, n: int) -> dict[str, list[float]]:
    """[hits, count] per measure over the first ``n`` cuespeak sessions of ``shards`` (see the module docstring); for
    the response mass, hits sum the probability the model gives the response words."""
    tok = default_tokenizer()
    resp = sorted({tok.encode_word(w)[0] for w in lang.RESPONSE_WORDS})
    cue_list = [heard(w) for w in lang.CUE_WORDS]
    got = {k: [0, 0] for k in ("heard token first", "heard word right", "heard token first elsewhere",
                               "response first after the cue", "response first after another cue word",
                               "response first, heard word made the cue", "response first, heard word made another",
                               "response mass, heard word made the cue", "response mass, heard word made another")}
    sessions = [i for i in range(len(shards)) if shards.info(i)["family"] == "cuespeak"][:n]
    rng = np.random.default_rng(0)

    def predict(item):
        with torch.no_grad():
            return model(collate([item], shards.families))["out_logits"][0]  # [T, n_out, V]

    for i in sessions:
        item = shards.session(i)
        out = item["out"]
        rows = [t for t in range(len(out)) if is_heard(out[t, 0])]
        noted = [int(out[t, 1]) for t in range(len(out)) if out[t, 0] == NOTE and is_heard(out[t, 1])]  # the cue
        pred = predict(item).argmax(-1).numpy()  # each slot given the targets before it
        if noted:  # the reading test: every heard token swapped, for the cue's, then for another cue-list word's
            others = [h for h in cue_list if h != noted[0]]
            for key, word in (("made the cue", lambda: noted[0]), ("made another", lambda: int(rng.choice(others)))):
                swapped = out.copy()
                for t in rows:
                    swapped[t, 0] = word()
                logits = predict(item | {"out": swapped})
                p = logits.argmax(-1).numpy()
                for t in rows:
                    got[f"response first, heard word {key}"][0] += int(p[t, 1] in resp)
                    got[f"response first, heard word {key}"][1] += 1
                    got[f"response mass, heard word {key}"][0] += float(logits[t, 1].softmax(-1)[resp].sum())
                    got[f"response mass, heard word {key}"][1] += 1
        for t in range(len(out)):
            key = "heard token first" if t in rows else "heard token first elsewhere"
            got[key][0] += int(is_heard(pred[t, 0]))
            got[key][1] += 1
        for t in rows:
            got["heard word right"][0] += int(pred[t, 0] == out[t, 0])
            got["heard word right"][1] += 1
            key = "response first after the cue" if out[t, 1] in resp else "response first after another cue word"
            got[key][0] += int(pred[t, 1] in resp)
            got[key][1] += 1
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", nargs="+", default=["data/shards/val/cue"])
    ap.add_argument("--sessions", type=int, default=60, help="cuespeak sessions per shards folder")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load(a.checkpoint).eval()
    for path in a.shards:
        for kind, (hits, n) in decisions(model, Shards(path), a.sessions).items():
            print(f"{path:<24} {kind:<40} {hits / max(n, 1):6.1%} of {n}")


if __name__ == "__main__":
    main()
