"""Reading training shards: memory-mapped sessions, a curriculum sampler, and collation into padded batches."""
from __future__ import annotations

import glob
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..codecs import dmel
from ..data.shards import PARTIAL
from ..stream.layout import Layout, recaps
from ..stream.tokenizer import SPECIALS

ARRAYS = ("audio", "mel", "text_in", "out", "listen", "frame", "frames")  # every shard holds them all
SESSION_KEYS = ("family", "start", "length", "difficulty")  # what every session's entry in sessions.json gives
REWRITE = "write the shard again (`microturn synth --shards`), or move it out of the training data"


def shard_dirs(root: str | Path) -> list[Path]:
    """The shard folders (those holding a ``sessions.json``) at or under ``root``, sorted, following symbolic links:
    a run's data folder may link parts written for another (pathlib's ``**`` does not follow them before Python 3.13,
    and skipped such parts without a word). A folder reached by two paths counts once; folders being written by
    ``microturn synth`` (``*.partial``, under ``root``) are not read."""
    found = glob.glob(os.path.join(glob.escape(str(root)), "**", "sessions.json"), recursive=True, include_hidden=True)
    dirs = {}
    for p in sorted(Path(f).parent for f in found):
        if any(part.endswith(PARTIAL) for part in p.relative_to(root).parts):
            continue  # a folder `microturn synth` is still writing, or an interrupted one left
        dirs.setdefault(p.resolve(), p)
    return sorted(dirs.values())


def read_meta(path: Path) -> dict:
    """A shard's ``sessions.json``, checked for what ``Shards`` reads from it: a ValueError naming the file if not."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # (json's errors, and a UnicodeDecodeError, are ValueErrors)
        raise ValueError(f"{path}: cannot be read ({e}); {REWRITE}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("layout"), dict) or \
            not isinstance(meta.get("sessions"), list):
        raise ValueError(f"{path}: not a shard's session list (a JSON object with a layout and sessions); {REWRITE}")
    for i, s in enumerate(meta["sessions"]):
        if not isinstance(s, dict) or any(k not in s for k in SESSION_KEYS):
            raise ValueError(f"{path}: session {i} lacks some of {', '.join(SESSION_KEYS)}; {REWRITE}")
    return meta


def read_arrays(d: Path, sessions: list[dict]) -> dict[str, np.ndarray]:
    """A shard's arrays, memory-mapped, each there, readable and as long as its sessions need: a ValueError naming
    the file if not (rather than a KeyError or a read past the end at some later step)."""
    arrays = {}
    for k in ARRAYS:
        f = d / f"{k}.npy"
        if not f.exists():
            raise ValueError(f"{d}: {f.name} is missing (a shard holds {', '.join(a + '.npy' for a in ARRAYS)}); "
                             f"{REWRITE}")
        try:
            arrays[k] = np.load(f, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{f}: cannot be read ({e}); {REWRITE}") from None
    turns = max((s["start"] + s["length"] for s in sessions), default=0)
    for k, a in arrays.items():
        if k != "frames" and (a.ndim == 0 or len(a) < turns):
            raise ValueError(f"{d / (k + '.npy')}: holds {len(a) if a.ndim else 0} micro-turns, the sessions of "
                             f"sessions.json {turns}; {REWRITE}")
    return arrays


class Shards:
    """All sessions of the shard folders under ``root`` (memory-mapped)."""

    def __init__(self, root: str | Path):
        dirs = shard_dirs(root)
        if not dirs:
            raise FileNotFoundError(f"no training shards under {root}: write some with `microturn synth --shards`")
        self.shards, self.index = [], []
        layouts = set()
        for d in dirs:
            meta = read_meta(d / "sessions.json")
            written = meta.get("specials", 7)  # shards from before the count was recorded had 7
            if written != len(SPECIALS):
                raise ValueError(f"{d} was written with {written} special tokens, the tokenizer has "
                                 f"{len(SPECIALS)}: render it again, or bring it up to date with "
                                 f"scripts/relayout_shards.py")
            if meta.get("pending"):
                raise ValueError(f"{d}: its {', '.join(meta['pending'])} sessions are not yet rendered again for "
                                 f"the tokenizer's ids; run scripts/relayout_shards.py again to finish")
            layouts.add(json.dumps(meta["layout"], sort_keys=True))
            self.shards.append(read_arrays(d, meta["sessions"]))
            self.index += [(len(self.shards) - 1, s) for s in meta["sessions"]]
        if len(layouts) != 1:
            raise ValueError(f"shards under {root} mix layouts: {layouts}")
        self.layout = Layout(**json.loads(layouts.pop()))
        self.families = sorted({s["family"] for _, s in self.index})

    def __len__(self):
        return len(self.index)

    def summary(self) -> dict:
        """How many sessions, in how many shard folders, and of each family: what a run read."""
        by_family = Counter(s["family"] for _, s in self.index)
        return {"sessions": len(self), "folders": len(self.shards), "by_family": dict(sorted(by_family.items()))}

    def info(self, i: int) -> dict:
        return self.index[i][1]

    def session(self, i: int) -> dict[str, np.ndarray]:
        k, s = self.index[i]
        a, sl = self.shards[k], slice(s["start"], s["start"] + s["length"])
        L = self.layout
        frame = np.asarray(a["frame"][sl])
        video = np.zeros((s["length"], L.video_size, L.video_size, 3), np.uint8)
        if (frame >= 0).any():
            video[frame >= 0] = a["frames"][frame[frame >= 0]]
        out, listen = np.asarray(a["out"][sl], np.int64), np.asarray(a["listen"][sl], np.int64)
        return {"clock": np.arange(s["length"]),
                "audio": np.asarray(a["audio"][sl]).reshape(-1, L.n_audio, L.frames_per_token, dmel.N_MELS),
                "video": video, "video_on": frame >= 0, "text_in": np.asarray(a["text_in"][sl], np.int64),
                "out": out, "listen": listen, "mel": np.asarray(a["mel"][sl]),  # bins: the model reads either
                "family": s["family"], "recap": recaps(out, listen)}


WARP = (0.83, 1.2)  # the range of vocal-tract scaling ``augment`` draws from (log-uniform)


def colour(bins: np.ndarray, gain) -> np.ndarray:
    """dMel bins [..., 80] with ``gain`` levels (6 dB each; a number, or one per channel [80]) added to every sounding
    bin, rounded and kept in range; silence stays silence, the dtype is kept."""
    x = bins.astype(np.float32)
    return np.where(x > 0, np.clip(np.rint(x + gain), 0, dmel.N_BINS - 1), 0).astype(bins.dtype)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomly alter a session's input dMel bins [T, A, F, 80] (uint8) so the model hears more voices and rooms
    than the shards hold: three times in four a new vocal tract (``dmel.warp_channels``, a scale drawn
    log-uniformly from ``WARP``: about the step from a man's formants to a woman's), a gain of one level (6 dB) up or
    down, and SpecAugment-style masks (a band of up to 8 mel bins, and a few spans of up to 6 frames, set to
    silence). The targets are untouched. The warp is there for the held-out voices most unlike the training ones:
    session 7's model heard 37 % of the task-word tokens of flite's held-out awb (a man's voice; the training split's
    one voice of its kind, slt, is a woman's) against 69 % for held-out espeak-ng voices
    (``scripts/voices_report.py``)."""
    x = audio.reshape(-1, audio.shape[-1]).astype(np.int16)  # [frames, 80]
    if rng.random() < 0.75:
        x = dmel.warp_channels(x, float(np.exp(rng.uniform(*np.log(WARP)))))
    if rng.random() < 0.5:
        x = colour(x, rng.choice([-1, 1]))
    if rng.random() < 0.5:
        w = int(rng.integers(1, 9))
        f0 = int(rng.integers(0, x.shape[1] - w + 1))
        x[:, f0 : f0 + w] = 0
    for _ in range(rng.poisson(len(x) / dmel.FRAMES_PER_SECOND / 4)):  # about one span per 4 s
        w = int(rng.integers(1, 7))
        t0 = int(rng.integers(0, max(1, len(x) - w)))
        x[t0 : t0 + w] = 0
    return x.astype(np.uint8).reshape(audio.shape)


EQ_POINTS = 6  # control points of ``equalise``'s gain curve, spread evenly over the mel channels


def equalise(audio: np.ndarray, rng: np.random.Generator, depth: float) -> np.ndarray:
    """A random equaliser on a session's input dMel bins [..., 80] (uint8): a gain curve through ``EQ_POINTS`` levels
    drawn uniformly in [-depth, depth] (one level is 6 dB), linear between them, added to every sounding bin and
    rounded (silence stays silence), so that the model hears through a microphone, a room or a vocoder that colours
    the spectrum. Session 30 found the bundled model, trained only on whole-spectrum gains, naming 77 % of held-out
    voices' task words right and 26-34 % once the upper half of the channels was one level up or down."""
    return colour(audio, np.interp(np.arange(dmel.N_MELS), np.linspace(0, dmel.N_MELS - 1, EQ_POINTS),
                                   rng.uniform(-depth, depth, EQ_POINTS)))


BAND_TOP = (3000.0, 7000.0)  # Hz: the range of ``band_limit``'s upper edge (a telephone's 3.4 kHz, 8 kHz audio's 4)
BAND_BOTTOM = (80.0, 400.0)  # Hz: the range of its lower edge (a telephone's 300 Hz)
BAND_SLOPE = (3.0, 60.0)  # levels per octave beyond an edge: how steeply the band falls off (log-uniform)
BAND_FLOOR = (0.0, 9.0)  # the noise floor's level in the widest channel: 0 for float audio, about 7 for 16-bit's
# a white noise floor's level in each channel relative to the widest one's: a channel sums its FFT bins' magnitudes
# with its triangle's weights, so it is as loud as its triangle is wide (the lowest channels 1.7 levels down)
_WIDTH = dmel.mel_filterbank().sum(1)
_WHITE = np.log10(_WIDTH / _WIDTH.max()) / dmel.STEP


def band_limit(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random band on a session's input dMel bins [..., 80] (uint8), as a telephone line, 8 kHz audio or a small
    loudspeaker leaves them: an upper edge drawn in ``BAND_TOP`` and a lower one in ``BAND_BOTTOM``, each channel
    beyond them turned down by a slope (``BAND_SLOPE``) times its octaves beyond the edge, but never below a white
    noise floor (``BAND_FLOOR``; dithered, so a fractional floor mixes two levels), the channels inside untouched.
    Session 57 found the bundled model passing 46 of sets/val's 72 scenarios through sox's 300-3400 Hz band against
    62 as rendered; session 58 found why training on that band with the channels beyond it at level 0 did not help:
    no recording holds level 0 there (16-bit audio's rounding noise is about level 7 in the top channels)."""
    top, bottom = rng.uniform(*BAND_TOP), rng.uniform(*BAND_BOTTOM)
    slope = np.exp(rng.uniform(*np.log(BAND_SLOPE)))
    beyond = np.maximum(np.log2(dmel.CHANNEL_HZ / top), np.log2(bottom / dmel.CHANNEL_HZ)).clip(0)  # octaves
    x = audio.reshape(-1, dmel.N_MELS)
    floor = np.floor(rng.uniform(*BAND_FLOOR) + _WHITE + rng.random(x.shape))
    out = np.clip(np.maximum(x - slope * beyond, floor), 0, dmel.N_BINS - 1)
    return np.where(beyond > 0, np.rint(out), x).astype(audio.dtype).reshape(audio.shape)


# Families whose instruction stays in force to the session's end: in a conversation they only come last.
LASTING = ("timespeak", "cuespeak", "translate", "repcount")
CLOCK_SHIFT_MAX = 18000  # micro-turns (an hour): the furthest a session's clock is moved (``shift_clock``)


def shift_clock(item: dict, rng: np.random.Generator) -> dict:
    """Half of the time, start the session's clock at a random time within the first hour instead of at zero, so the
    model reads time from clock differences and a long live session's clock is nothing new to it."""
    if rng.random() < 0.5:
        item["clock"] = item["clock"] + int(rng.integers(0, CLOCK_SHIFT_MAX))
    return item


def join(items: list[dict]) -> dict:
    """Sessions one after another as one conversation (arrays joined in time, one clock); its family is the last's."""
    if len(items) == 1:
        return items[0]
    out = {k: np.concatenate([it[k] for it in items]) for k in items[0] if k != "family"}
    out["clock"] = np.arange(len(out["clock"]))
    return out | {"family": items[-1]["family"]}


OPENING = (20, 46)  # micro-turns an opening keeps (``StepBatches``): 4-9 s, drawn uniformly


def opening(item: dict, n: int) -> dict:
    """The session's first ``n`` micro-turns: what a causal model reads and writes there does not depend on what
    comes after, so every target of the cut session is still right."""
    return {k: v if k == "family" else v[:n] for k, v in item.items()}


def collate(items: list[dict], families: list[str]) -> dict[str, torch.Tensor]:
    """Pad sessions to the longest; ``valid`` [B, T] marks real micro-turns, ``family`` [B] indexes ``families``.
    Video frames that are off are left blank (the model never reads them; most sessions have none on)."""
    T = max(len(it["clock"]) for it in items)
    batch = {}
    for k in ("clock", "audio", "video", "video_on", "text_in", "out", "listen", "mel", "recap"):
        if k not in items[0]:  # the recap mask is optional (sessions made outside Shards)
            continue
        a0 = items[0][k]
        arr = np.zeros((len(items), T) + a0.shape[1:], a0.dtype)
        for i, it in enumerate(items):
            if k == "video":
                on = np.flatnonzero(it["video_on"])
                arr[i, on] = it[k][on]
            else:
                arr[i, : len(it[k])] = it[k]
        batch[k] = torch.from_numpy(arr)
    batch["valid"] = torch.from_numpy(np.stack([np.arange(T) < len(it["clock"]) for it in items]))
    batch["family"] = torch.tensor([families.index(it["family"]) for it in items])
    return batch


def parse_mix(text: str | None) -> dict[str, float]:
    """``"timespeak=3,cuespeak=2"`` -> {"timespeak": 3.0, "cuespeak": 2.0}; families not named weigh 1."""
    mix = {}
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        name, eq, w = part.partition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = -1.0
        if not eq or not name or not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"bad family weight {part!r}: expected family=weight with a finite weight >= 0, "
                             f"e.g. 'timespeak=3,cuespeak=2'")
        mix[name] = weight
    return mix


class Curriculum:
    """Samples sessions: at training progress p in [0, 1], sessions of difficulty <= start + p are eligible
    (easy first: typed instructions, clean audio, then spoken, noisy; ``start`` is train's --curriculum, and 1 or
    more makes every session eligible from the start, as a fine-tune of a trained model may want). Families are
    drawn in proportion to ``mix`` (a weight per family, 1 for those not named): evenly by default."""

    def __init__(self, shards: Shards, seed: int = 0, start: float = 0.3, mix: dict[str, float] | None = None):
        self.shards, self.start = shards, start
        self.rng = np.random.default_rng(seed)
        self.diff = np.array([s["difficulty"] for _, s in shards.index])
        fam = np.array([s["family"] for _, s in shards.index])
        self.by_family = {f: np.flatnonzero(fam == f) for f in shards.families}
        self.lengths = np.array([s["length"] for _, s in shards.index])
        self.free = np.flatnonzero(~np.isin(fam, LASTING))  # sessions that may come before others
        mix = mix or {}
        unknown = sorted(set(mix) - set(self.by_family))
        if unknown:
            raise ValueError(f"family weights for families the shards do not hold: {', '.join(unknown)} "
                             f"(shards hold: {', '.join(self.by_family)})")
        w = np.array([mix.get(f, 1.0) for f in self.by_family], np.float64)
        if not (np.isfinite(w) & (w >= 0)).all():
            raise ValueError(f"family weights must be finite and 0 or more, got {mix}")
        if not w.sum() > 0:
            raise ValueError("family weights are all zero")
        self.p = w / w.sum()

    def sample(self, n: int, progress: float, rng: np.random.Generator | None = None) -> list[int]:
        """n session indices (drawn with ``rng``, or the sampler's own)."""
        rng = self.rng if rng is None else rng
        limit = self.start + progress
        out = []
        fams = list(self.by_family)
        for _ in range(n):
            idx = self.by_family[fams[rng.choice(len(fams), p=self.p)]]
            ok = idx[self.diff[idx] <= limit]
            pool = ok if len(ok) else idx
            out.append(int(pool[rng.integers(len(pool))]))
        return out

    def conversations(self, n: int, progress: float, max_len: int,
                      rng: np.random.Generator | None = None) -> list[list[int]]:
        """n conversations of up to ``max_len`` micro-turns: sessions of families whose instruction ends with them
        (turn, pause, refusal, ...), then one session drawn like ``sample``; as many earlier sessions as fit."""
        rng = self.rng if rng is None else rng
        free = self.free[self.diff[self.free] <= self.start + progress]
        out = []
        for last in self.sample(n, progress, rng):
            conv, total = [last], self.lengths[last]
            for _ in range(3):  # at most three sessions before the last
                i = int(free[rng.integers(len(free))]) if len(free) else last
                if i == last or total + self.lengths[i] > max_len:
                    break
                conv.insert(0, i)
                total += self.lengths[i]
            out.append(conv)
        return out


BUCKET_TAG = 0x6275636B  # in the seed of a bucket's order: no step's or item's seed holds it


class StepBatches(torch.utils.data.Dataset):
    """Training batch number ``step`` of rank ``rank`` of ``world``, a pure function of (seed, step, rank): sessions
    drawn by the curriculum at progress step / steps, a share ``conversations`` of the batches made of several
    sessions in a row (up to ``max_len`` micro-turns), a share ``openings`` made of session openings (each session's
    first 4-9 s, ``OPENING``: where instructions are given and must be heard, with about a fifth of a full batch's
    tokens), and, with ``augment``, each item's audio altered and its clock shifted. Being pure, the batches can be
    made ahead of time in worker processes (a DataLoader with ``num_workers``), and an interrupted run resumes with no
    sampler state.

    A step's items are drawn once for all the ranks (``draw``: batch * world of them, the same on every rank), sorted
    by length and dealt out in turn, so that under DDP the ranks' batches are alike in length and none waits long for
    another at the gradients' all-reduce (drawn apart for each rank, one of runs/g49's two ranks sat idle about a
    third of the time; docs/training.md, session 53). A run's data so depends on its whole batch, not on how many
    processes share it, and a run on one process draws as it always did.

    With ``bucket`` = G > 1 the items drawn for G consecutive steps (G * batch * world of them, each altered as its
    own step would alter it) are sorted by length and dealt out in G steps' batches of neighbours, in an order drawn
    per bucket: a batch pads to its longest item, so batches of like lengths cost far less (at G = 8 about 0.6 times
    the micro-turns of random ones on a part of all twelve families). Every item is still drawn, and the loss weighs
    each session alike whatever it is batched with (``InteractionModel.forward``), so only the grouping changes."""

    def __init__(self, shards: Shards, cur: Curriculum, *, batch: int, steps: int, seed: int, rank: int,
                 conversations: float, augment: bool, max_len: int, openings: float = 0.0, eq: float = 0.0,
                 band: float = 0.0, bucket: int = 1, world: int = 1):
        if bucket < 1:
            raise ValueError(f"bucket must be a number of steps, 1 (off) or more, got {bucket}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of the {world} ranks (0 to {world - 1})")
        self.shards, self.cur, self.batch, self.steps, self.max_len = shards, cur, batch, steps, max_len
        self.seed, self.rank, self.world, self.conversations, self.augment = seed, rank, world, conversations, augment
        self.openings, self.eq, self.band, self.bucket = openings, eq, band, bucket

    def __len__(self) -> int:
        return self.steps

    def draw(self, step: int) -> list[tuple[tuple[int, ...], int | None]]:
        """Step ``step``'s items for every rank (batch * world of them, the same on each), unloaded: each the
        sessions it joins and where it is cut (None: not cut)."""
        rng = np.random.default_rng([self.seed, 0, step])  # (the 0 once held the rank: one process draws as before)
        progress, n = step / self.steps, self.batch * self.world
        if self.openings and rng.random() < self.openings:  # (no draw without openings: older runs' batches stay)
            cut = int(rng.integers(*OPENING))
            return [((i,), cut) for i in self.cur.sample(n, progress, rng)]
        if self.conversations and rng.random() < self.conversations:
            groups = self.cur.conversations(n, progress, self.max_len, rng)
        else:
            groups = [[i] for i in self.cur.sample(n, progress, rng)]
        return [(tuple(g), None) for g in groups]

    def length(self, item: tuple[tuple[int, ...], int | None]) -> int:
        """An item's micro-turns."""
        ids, cut = item
        n = int(sum(self.cur.lengths[i] for i in ids))
        return n if cut is None else min(n, cut)

    def slot(self, step: int) -> int:
        """With buckets: which of its bucket's steps' items, shortest first, step ``step`` takes (0 without)."""
        first = step - step % self.bucket
        return int(np.random.default_rng([self.seed, 0, first, BUCKET_TAG]).permutation(self.bucket)[step - first])

    def share(self, step: int) -> list[tuple[int, int, tuple[tuple[int, ...], int | None]]]:
        """This rank's items of step ``step``, each with the step and place it was drawn at."""
        if self.bucket == 1 and self.world == 1:  # nothing to deal: kept in drawn order, as runs before buckets had it
            return [(step, j, it) for j, it in enumerate(self.draw(step))]
        first, n = step - step % self.bucket, self.batch * self.world
        pool = [(s, j, it) for s in range(first, first + self.bucket) for j, it in enumerate(self.draw(s))]
        pool.sort(key=lambda p: self.length(p[2]))  # stable: like lengths keep the order they were drawn in
        k = self.slot(step)
        return pool[k * n : (k + 1) * n][self.rank :: self.world]

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        items = []
        for s, j, (ids, cut) in self.share(step):
            it = join([self.shards.session(i) for i in ids])
            it = it if cut is None else opening(it, cut)
            if self.augment:  # seeded by the step and place the item was drawn at, so bucketing alters it alike
                item_rng = np.random.default_rng([self.seed, 0, s, j])
                it["audio"] = augment(it["audio"], item_rng)
                shift_clock(it, item_rng)
                if self.eq and item_rng.random() < 0.5:  # drawn after the rest: without it, older runs' batches stay
                    it["audio"] = equalise(it["audio"], item_rng, self.eq)
                if self.band and item_rng.random() < self.band:  # drawn last, for the same reason
                    it["audio"] = band_limit(it["audio"], item_rng)
            items.append(it)
        return collate(items, self.shards.families)
