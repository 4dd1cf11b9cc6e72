"""Whether a checkpoint hears the words of spoken instructions, and how early in its blocks: teacher-forced on shards,
the argmax accuracy of the listening head at the last audio token of each response word, cue word and number word
the user says in spoken sessions of the chosen families (time and cue sessions unless told), read off the last block
and off the states after ``--tap`` blocks (what the out slots above can use; ``microturn train --early-listen``),
and over all other user words. Beside them, ``asked``: the argmax accuracy of the out slots on the number words
of the delegations (between ``<dlg>`` and ``</dlg>``) of those sessions, each given the tokens before it: what the
model writes when it asks the background model, a second or more after it heard the numbers; and ``question``:
how many of those delegations have every word right, teacher-forced and free-running (the model writes the question
token by token from its own earlier tokens, greedy, as it does live, the session's audio and typed text as they are).
In shards made with ``--note-questions``, ``noted``: the words of the notes written before the delegation, each
given its ``<note>``. The last block's number words are also scored by kind (``NUMBER_KINDS``): ten to nineteen,
the round tens, and the rest (zero to nine, hundred), since "-teen" and "-ty" are the pair heard wrong. With
``--by-end`` they are scored again by where the word ends in the audio token scored (the last whose middle falls in
the word; the sessions generated again for their words' times, which shards do not keep): from 50 ms before the
token's end (the word fills half of it) to 50 ms after (its last 50 ms are heard only by the next token, which is
taught the word after it, unless the shards are labelled at the words' ends too, ``microturn synth --listen-ends``
or scripts/listen_ends.py: there the word is scored at the token it ends in where it is labelled there, binned the
same way).

    python scripts/listening_report.py microturn/assets/model --shards data/shards/val --sessions 40 --tap 3
    python scripts/listening_report.py microturn/assets/model --shards data/shards/val23 --families delegate
    python scripts/listening_report.py microturn/assets/model --shards data/shards/val-del61b --families delegate \
        --sessions 600 --by-end

The second form scores the numbers of spoken delegate questions, which scripts/delegate_report.py finds the bundled
model mishears most.
"""
import argparse

import numpy as np
import torch

from microturn.data import language as lang
from microturn.data.shards import listen_ends_of, session_again
from microturn.model.checkpoint import load
from microturn.stream.layout import end_label
from microturn.stream.tokenizer import DLG, DLG_END, EOT, NOTE, PAD, SIL, TYPED, default_tokenizer
from microturn.train.data import Shards, collate, read_meta, shard_dirs


# the number words by kind, scored apart at the last block: "-teen" against "-ty" is the pair heard wrong
NUMBER_KINDS = {w: "10-19" if 10 <= i < 20 else "20-90" if w.endswith("ty") else "0-9, 100"
                for i, w in enumerate(lang.NUMBER_WORDS)}


@torch.no_grad()
def report(model, shards: Shards, n: int, tap: int, families=("timespeak", "cuespeak"),
           split: str | None = None, ends: float | None = None) -> dict[tuple[str, str], list[int]]:
    """``split``: that of the shards, to score the number words by where they end (``--by-end``); None: not;
    ``ends``: the shards are labelled at the words' ends too (``microturn synth --listen-ends``'s seconds)."""
    tok = default_tokenizer()
    kind_of = {tok.encode_word(w)[0]: "number word" for w in lang.NUMBER_WORDS}
    kind_of |= {tok.encode_word(w)[0]: "response word" for w in lang.RESPONSE_WORDS}
    kind_of |= {tok.encode_word(w)[0]: "cue word" for w in lang.CUE_WORDS}
    kinds = ("response word", "cue word", "number word", "other")
    st = {(b, k): [0, 0] for b in ("last block", f"block {tap}", "noted", "asked") for k in kinds}
    st |= {("question", k): [0, 0] for k in ("teacher-forced", "free-running")}
    number_kind = {tok.encode_word(w)[0]: f"number {k}" for w, k in NUMBER_KINDS.items()}
    st |= {("last block", k): [0, 0] for k in dict.fromkeys(number_kind.values())}
    if split:
        st |= {(end_bin(k), c): [0, 0] for k in range(len(END_BINS) - 1) for c in dict.fromkeys(number_kind.values())}
    spoken = [i for i in range(len(shards)) if shards.info(i)["family"] in families]
    done = 0
    for i in spoken:
        item = shards.session(i)
        if (item["text_in"] == TYPED).any():
            continue
        b = collate([item], shards.families)
        r = model(b, early_listen=tap)
        target = b["listen"][0].flatten()
        for block, logits in (("last block", r["listen_logits"]), (f"block {tap}", r["listen_early_logits"])):
            pred = logits[0].argmax(-1).flatten()
            for j, g in enumerate(target.tolist()):
                kind = kind_of.get(g, "other")
                last = j + 1 == len(target) or target[j + 1] != g
                if g == SIL or (kind != "other" and not last):
                    continue  # instruction words are scored at their end, other words all through
                st[block, kind][0] += int(pred[j] == g)
                st[block, kind][1] += 1
                if block == "last block" and g in number_kind:
                    st[block, number_kind[g]][0] += int(pred[j] == g)
                    st[block, number_kind[g]][1] += 1
        if split:
            by_end(st, session_again(shards.info(i), split), target, r["listen_logits"][0].argmax(-1).flatten(),
                   shards.layout, tok, number_kind, ends)
        out, pred = b["out"][0].flatten().tolist(), r["out_logits"][0].flatten(0, 1).argmax(-1).tolist()
        for j in range(out.index(DLG) if DLG in out else 0):
            if out[j] == NOTE and out[j + 1] in kind_of:
                st["noted", kind_of[out[j + 1]]][0] += int(pred[j + 1] == out[j + 1])
                st["noted", kind_of[out[j + 1]]][1] += 1
        inside, words = False, []  # the question's word slots
        for j, (g, p) in enumerate(zip(out, pred)):
            inside = (inside or g == DLG) and g != DLG_END
            if inside and g in kind_of:
                st["asked", kind_of[g]][0] += int(p == g)
                st["asked", kind_of[g]][1] += 1
            if inside and g not in (DLG, EOT, PAD):
                words.append(j)
        if words:
            truth = [out[j] for j in words]
            for how, got in (("teacher-forced", [pred[j] for j in words]),
                             ("free-running", free_question(model, b, out.index(DLG) + 1))):
                st["question", how][0] += int(got == truth)
                st["question", how][1] += 1
        done += 1
        if done == n:
            break
    return st


END_BINS = (-0.05, -0.025, 0.0, 0.025, 0.05)  # where a word ends against its last middle token's end, in seconds


def by_end(st: dict, session, target, pred, layout, tok, number_kind: dict, ends: float | None = None):
    """Score each number word the user says at its last audio token (the last whose middle is in the word; in
    shards labelled at the words' ends, ``ends``, the one it ends in where it is labelled there) under its kind and
    where the word ends against the end of the last token whose middle is in it (``END_BINS``)."""
    span = layout.delta / layout.n_audio
    mids = (np.arange(len(target)) + 0.5) * span
    for w in session.timeline.words:
        ids = tok.encode_word(w.w.lower())
        if w.speaker == "agent" or not ids or ids[0] not in number_kind:
            continue
        j = np.nonzero((mids >= w.start) & (mids < w.end))[0]
        if not len(j):
            continue  # a word too short to be given a token
        j = int(j[-1])
        e = end_label(w.end, span, ends)
        at = e if e is not None and e < len(target) else j  # (where listen_targets put the word's end label)
        if target[at] != ids[0]:
            continue  # a word another word's label covers
        k = int(np.searchsorted(END_BINS, w.end - (j + 1) * span, side="right")) - 1
        k = min(max(k, 0), len(END_BINS) - 2)  # an end on the next token's middle, to rounding, is in the last bin
        st[end_bin(k), number_kind[ids[0]]][0] += int(pred[at] == ids[0])
        st[end_bin(k), number_kind[ids[0]]][1] += 1


def end_bin(k: int) -> str:
    return f"ends {END_BINS[k] * 1000:+.0f}..{END_BINS[k + 1] * 1000:+.0f} ms"


def free_question(model, b: dict, start: int, most: int = 16) -> list[int]:
    """The question's word tokens as the model writes them greedily from out slot ``start`` (flat, the one after its
    ``<dlg>``) until its ``</dlg>``, each slot written from the ones before: an ``<eot>`` ends the micro-turn, the
    rest of it left ``<pad>``. A forward pass per slot (teacher-forced passes are exact for what comes before)."""
    o = b["out"].clone()
    K, flat = o.shape[-1], o.view(-1)
    flat[start:] = PAD
    got, p = [], start
    while len(got) < most and p < flat.numel():
        x = int(model(b | {"out": o})["out_logits"][0].flatten(0, 1)[p].argmax())
        if x == DLG_END:
            break
        flat[p] = x
        if x == EOT:
            p = (p // K + 1) * K
        else:
            got.append(x)
            p += 1
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--shards", default="data/shards/val")
    ap.add_argument("--sessions", type=int, default=40, help="spoken sessions of those families")
    ap.add_argument("--families", default="timespeak,cuespeak", help="comma-separated")
    ap.add_argument("--tap", type=int, default=3, help="blocks below the states read (1 .. depth - 1)")
    ap.add_argument("--by-end", action="store_true",
                    help="also score the number words by where they end in their audio token (generates the "
                         "sessions again: slower)")
    a = ap.parse_args()
    shards = Shards(a.shards)
    split, ends = None, None
    if a.by_end:
        metas = [read_meta(d / "sessions.json") for d in shard_dirs(a.shards)]
        splits, labels = {m.get("split") for m in metas}, {listen_ends_of(m) for m in metas}
        if len(splits) != 1 or len(labels) != 1:
            ap.error(f"--by-end needs shards of one split and one labelling, {a.shards} holds splits "
                     f"{sorted(map(str, splits))}, labelled at the words' ends: {sorted(labels)}")
        split, ends = splits.pop(), labels.pop()
    st = report(load(a.checkpoint), shards, a.sessions, a.tap, tuple(a.families.split(",")), split, ends)
    for (block, kind), (hit, n) in st.items():
        if n:
            print(f"{block:<11} {kind:<14} {hit / n:5.0%} of {n}")


if __name__ == "__main__":
    main()
