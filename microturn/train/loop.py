"""``microturn train``: one script for a CPU here and for many GPUs under ``torchrun``.

AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on GPU, DDP (or, with ``fsdp``, FSDP2's
``fully_shard`` for the large presets: each block's weights and optimiser state split over the ranks; checkpoints
hold the whole tensors, gathered), a curriculum over difficulty with families mixed evenly or by given weights
(``mix``), batches of conversations (several sessions in a row, ``conversations``) and of session openings
(``openings``), random clock shifts, gradient accumulation (``accum``: a step's batch in pieces), batches made ahead
in worker processes (``workers``; each batch is a pure function of seed, step and rank), checkpoints that resume
exactly (model, optimiser, step and torch RNG state), also written when the run is stopped (Ctrl-C, SIGTERM:
``StopRequest``), TensorBoard logs, training curves as PNG, and a progress bar with tokens per second. Evaluation
on held-out shards (voices, speakers and sentences never trained on) reports the losses and the listening accuracy
at every evaluation.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..data.language import task_words
from ..model import checkpoint
from ..model.config import ModelConfig, preset
from ..model.model import InteractionModel
from ..stream.layout import out_loss_mask
from ..stream.tokenizer import EOT, SIL, Tokenizer, default_tokenizer
from .config import TrainConfig, option
from .data import Curriculum, Shards, StepBatches, collate, parse_mix


def task_word_mask(tok: Tokenizer, vocab_size: int) -> torch.Tensor:
    """[vocab] bool: the listening targets of the task words (each word's first token, as ``listen_targets``)."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[[tok.encode_word(w)[0] for w in task_words()]] = True
    return mask


def lr_at(step: int, c: TrainConfig) -> float:
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    p = min(1.0, (step - c.warmup) / max(1, c.steps - c.warmup))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * p))


class Diverged(ValueError):
    """A training step whose loss or gradient norm is not a finite number: the run stops before saving it, and the
    last checkpoint stays as it was. (A ValueError: the CLI says it in one line.)"""


MODEL_OPTIONS = ("preset", "init", "audio_conv", "hear_back")  # what makes a run's model: fixed once it has begun


def check_resume(c: TrainConfig, out: Path) -> dict:
    """A run to resume: its record (``train_config.json``, {} if there is none), after checking that ``c`` asks for
    the model it was started with (``MODEL_OPTIONS``; the schedule, the data and the rest may change: a new --steps
    stretches the cosine schedule). Otherwise a ValueError listing the options that differ."""
    path = out / "train_config.json"
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"a JSON object was expected, not {type(saved).__name__}")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read ({e}), so the options the run in {out} was started with are not "
                         "known: delete the file to resume without checking them") from None
    default = TrainConfig()
    was = {k: saved.get(k, getattr(default, k)) for k in MODEL_OPTIONS}
    if was["init"] and was["init"] == c.init:  # with --init the preset is not used
        was["preset"] = c.preset
    differ = [f"{option(k)} {was[k]!r} (now {getattr(c, k)!r})" for k in MODEL_OPTIONS if was[k] != getattr(c, k)]
    if differ:
        raise ValueError(f"{out} holds a run started with other options that make its model: {'; '.join(differ)}. "
                         f"Give the same ones to resume it, or another --out to start a new run")
    return saved


def load_state(path: Path) -> dict:
    """A run's ``train_state.pt``, or a ValueError naming the file when it cannot be read (cut short, say)."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=False)  # the RNG state stays a CPU tensor
    except Exception as e:  # (torch raises many kinds for a broken file: RuntimeError, OSError, EOFError, pickle's)
        raise ValueError(f"{path}: cannot be read ({type(e).__name__}: {e}); delete it to start the run over (the "
                         f"model beside it, if whole, can be given to --init)") from None
    if not isinstance(st, dict) or any(k not in st for k in ("model", "opt", "step")):
        raise ValueError(f"{path}: not a training state (model, optimiser and step); delete it to start the run "
                         f"over")
    return st


def run_lock(out: Path):
    """One training process at a time in a run's folder (``train.lock``, an advisory lock the OS drops with the
    process): a second start would share its state files. Returns the open lock file; closing it unlocks."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    f = (out / "train.lock").open("w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ValueError(f"{out} is being trained by another process (it holds {out / 'train.lock'}): let it finish or "
                         f"stop it, or give another --out") from None
    return f


def cut_log(path: Path, step: int) -> None:
    """Drop the rows of ``log.jsonl`` after ``step``: a run killed after its last checkpoint logged steps that its
    resumption trains again (their rows would be there twice, the discarded ones first); at step 0 (a run started
    over in its folder) the old run's rows."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) > step:
                continue
        except (ValueError, AttributeError):  # a line cut short by the kill: dropped too
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def finite_step(r: dict, gnorm: torch.Tensor, world: int) -> bool:
    """Whether a step's loss and gradient norm are finite numbers on every process (all agree)."""
    ok = (torch.isfinite(r["loss"].detach()) & torch.isfinite(gnorm.detach())).to(torch.int32).reshape(1)
    if world > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


class Stopped(Exception):
    """A run stopped by a signal after saving its checkpoint; the same command resumes it."""

    def __init__(self, step: int, signum: int, out: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}: checkpoint saved in {out}; "
                         "the same command resumes")
        self.step, self.signum = step, signum


class StopRequest:
    """SIGINT and SIGTERM, while the run lasts, ask it to stop after the step in progress, with a checkpoint.

    Repeats are ignored: under ``torchrun`` a Ctrl-C reaches each process twice (from the terminal and from torchrun,
    which kills what is left after its shutdown timeout, 30 s). Outside the main thread no handler can be set and a
    signal acts as usual. ``agreed`` makes every process stop at the same step."""

    def __init__(self):
        self.signum = 0
        self._old = {}
        self._pid = os.getpid()  # the loader's worker processes inherit the handler: they ignore the signal

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._ask) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def _ask(self, signum, frame):
        if not self.signum and os.getpid() == self._pid:
            self.signum = signum
            print(f"\n{signal.Signals(signum).name}: stopping after this step, with a checkpoint", flush=True)

    def agreed(self, world: int, dev: torch.device) -> int:
        """The signal any process received (0: none), the same on every process."""
        if world == 1:
            return self.signum
        t = torch.tensor([self.signum], device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())


def _dist() -> tuple[int, int, torch.device]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return rank, world, dev


def _to(batch: dict, dev) -> dict:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


def optimizer(model: InteractionModel, c: TrainConfig, dev: torch.device, added: tuple[str, ...] = ()):
    """AdamW: weight decay on the matrices only; the weights named by the prefixes ``added`` (those an --init model
    lacks) at ``c.added_lr`` times the schedule's rate (each group's ``lr_scale``)."""
    named = list(model.named_parameters())
    groups = [(lambda n, p: p.ndim >= 2 and not n.startswith(added), c.weight_decay, 1.0),
              (lambda n, p: p.ndim < 2 and not n.startswith(added), 0.0, 1.0),
              (lambda n, p: n.startswith(added), c.weight_decay, c.added_lr)]
    return torch.optim.AdamW(
        [{"params": [p for n, p in named if keep(n, p)], "weight_decay": wd, "lr_scale": scale}
         for keep, wd, scale in groups if any(keep(n, p) for n, p in named)],
        lr=c.lr, betas=(0.9, 0.95), fused=dev.type == "cuda" and not c.fsdp)


def step_batches(c: TrainConfig, shards: Shards, cfg: ModelConfig, rank: int = 0, world: int = 1,
                 steps: int | None = None) -> StepBatches:
    """The batches of ``c``'s schedule (of ``steps``, c.steps unless given) for rank ``rank`` of ``world``, as
    ``train`` draws them: each a pure function of the seed, the step and the rank."""
    return StepBatches(shards, Curriculum(shards, start=c.curriculum, mix=parse_mix(c.mix)), batch=c.batch,
                       steps=steps or c.steps, seed=c.seed, rank=rank, conversations=c.conversations,
                       augment=c.augment, max_len=cfg.window // cfg.layout.length, openings=c.openings, eq=c.eq,
                       band=c.band, bucket=c.bucket, world=world)


def listen_weights(c: TrainConfig, vocab_size: int) -> torch.Tensor | None:
    """The listening loss's weight per target token [vocab_size]: the task words at ``c.task_listen``, the rest at 1
    (None when that is 1 too)."""
    if c.task_listen == 1.0:
        return None
    return 1.0 + (c.task_listen - 1.0) * task_word_mask(default_tokenizer(), vocab_size).float()


PIECE_SUMS, PIECE_ROWS = ("loss", "moe"), ("text", "listen", "listen_early", "flow")  # a piece's losses: see train_step


def pieces(batch: dict, k: int) -> list[tuple[dict, float]]:
    """A batch [B, T, ...] cut into ``k`` pieces for gradient accumulation (``--accum``), each with its share of the
    sessions: sorted by length, so each piece is cut to its own longest session (less padding). The batch's loss is
    the mean of its sessions' losses, so the pieces' losses weighed by their shares add up to it (all but a mixture
    of experts' load-balance loss, which is taken per forward, and the flow loss's noise, drawn piece by piece)."""
    k = min(k, len(batch["valid"]))
    if k <= 1:
        return [(batch, 1.0)]
    length = batch["valid"].sum(1)
    out = []
    for rows in length.argsort(stable=True).tensor_split(k):
        T = max(int(length[rows].max()), 1)
        out.append(({key: v[rows, :T] if v.dim() > 1 else v[rows] for key, v in batch.items()},
                    len(rows) / len(length)))
    return out


@contextlib.contextmanager
def _gradient_sync(net, on: bool):
    """Across processes, gradients are reduced in the last piece's backward only; the pieces before add up locally
    (DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``)."""
    if on:
        yield
    elif hasattr(net, "no_sync"):
        with net.no_sync():
            yield
    elif hasattr(net, "set_requires_gradient_sync"):
        net.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            net.set_requires_gradient_sync(True)
    else:  # one process
        yield


def train_step(net, model: InteractionModel, opt, batch: dict, c: TrainConfig,
               listen_weight: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """One optimiser step on a batch already on the model's device: the forward in bf16 autocast on a GPU (fp32 on
    a CPU), backward (in ``c.accum`` pieces of the batch: ``pieces``), gradient clipping, AdamW. ``net`` is the model
    or its DDP/FSDP wrapper. Returns the losses (the whole batch's: ``loss`` and ``moe`` weighed by the pieces'
    shares, the rest per session, in the pieces' order) and the gradient norm before clipping."""
    dev = batch["valid"].device
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    opt.zero_grad(set_to_none=True)
    parts, rs = pieces(batch, c.accum), []
    for i, (piece, share) in enumerate(parts):
        with _gradient_sync(net, i == len(parts) - 1):
            with amp:
                r = net(piece, speak_weight=c.speak_weight, recap_weight=c.recap_weight,
                        early_listen=c.early_listen, listen_weight=listen_weight, listen_scale=c.listen_scale)
            (r["loss"] * share).backward()
        if len(parts) > 1:  # its losses only: a piece's logits are let go before the next piece runs
            rs.append(({k: r[k].detach() for k in PIECE_SUMS + PIECE_ROWS}, share))
            del r
    if rs:
        r = {k: sum(x[k] * w for x, w in rs) for k in PIECE_SUMS} | {
            k: torch.cat([x[k] for x, _ in rs]) for k in PIECE_ROWS}
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.clip)
    if hasattr(gnorm, "full_tensor"):  # FSDP: the norm of sharded gradients is a distributed tensor
        gnorm = gnorm.full_tensor()
    opt.step()
    return r, gnorm


@torch.no_grad()
def evaluate(model: InteractionModel, shards: Shards, n_batches: int, batch: int, dev, seed: int = 1234,
             early_listen: int = 0) -> dict:
    """Losses per family, listening accuracy (argmax of the listening head on user-word tokens; on the task words
    alone: ``listen_acc_task``, and by the user's voice engine: ``listen_acc_task_by_engine``, since a held-out flite
    voice is heard far worse than held-out espeak-ng ones, docs/training.md, session 30; with ``early_listen``, also
    after that many blocks: ``listen_acc_early``) and, per
    family, the accuracy on the out tokens that carry news (no <eot>, no recaps: see ``layout.recaps``): a note's
    word when it is taken, a timer's first value, the words said. Teacher-forced, and *what* rather than *when*: the
    likeliest token but <eot>, as greedy decoding picks once it has decided to act. Draws nothing from torch's global
    random state: a run's training noise does not depend on how often, or on which ranks, it evaluates."""
    model.eval()
    cur = Curriculum(shards, seed)
    noise = torch.Generator(device=dev).manual_seed(seed)  # the flow loss's: the same each time, and not the run's
    fam_loss: dict[str, list[float]] = {}
    news: dict[str, list[int]] = {}  # family -> [hits, tokens]
    hit = tot = hit_early = hit_task = tot_task = 0
    by_engine: dict[str, list[int]] = {}  # the user's voice engine -> [task-word hits, tokens]
    task = task_word_mask(default_tokenizer(), model.cfg.vocab_size).to(dev)
    totals = {"text": 0.0, "listen": 0.0, "flow": 0.0}
    for _ in range(n_batches):
        idx = cur.sample(batch, 1.0)
        b = _to(collate([shards.session(i) for i in idx], shards.families), dev)
        r = model(b, early_listen=early_listen, generator=noise)
        for k in totals:
            totals[k] += float(r[k].mean()) / n_batches
        for f, v in zip(b["family"].tolist(), r["text"].tolist()):
            fam_loss.setdefault(shards.families[f], []).append(v)
        pred = r["listen_logits"].argmax(-1)  # the forward pass above already computed them
        word = (b["listen"] != SIL) & b["valid"][..., None]
        hit += int(((pred == b["listen"]) & word).sum())
        tot += int(word.sum())
        task_word = word & task[b["listen"]]
        task_hit = ((pred == b["listen"]) & task_word).sum((1, 2)).tolist()
        task_n = task_word.sum((1, 2)).tolist()
        hit_task, tot_task = hit_task + sum(task_hit), tot_task + sum(task_n)
        for i, h, n in zip(idx, task_hit, task_n):
            acc = by_engine.setdefault((shards.info(i).get("voice") or "none").split(":")[0], [0, 0])
            acc[0], acc[1] = acc[0] + h, acc[1] + n
        if early_listen:
            hit_early += int(((r["listen_early_logits"].argmax(-1) == b["listen"]) & word).sum())
        told = out_loss_mask(b["out"]) & b["valid"][..., None] & ~b["recap"] & (b["out"] != EOT)
        what = r["out_logits"].index_fill(-1, torch.tensor([EOT], device=dev), -torch.inf).argmax(-1)
        right = (what == b["out"]) & told
        for f, h, n in zip(b["family"].tolist(), right.sum((1, 2)).tolist(), told.sum((1, 2)).tolist()):
            acc = news.setdefault(shards.families[f], [0, 0])
            acc[0], acc[1] = acc[0] + h, acc[1] + n
    model.train()
    early = {"listen_acc_early": hit_early / max(1, tot)} if early_listen else {}
    return totals | early | {"listen_acc": hit / max(1, tot), "listen_acc_task": hit_task / max(1, tot_task),
                             "listen_acc_task_by_engine": {k: h / n for k, (h, n) in by_engine.items() if n},
                             "text_by_family": {k: sum(v) / len(v) for k, v in fam_loss.items()},
                             "news_acc_by_family": {k: h / n for k, (h, n) in news.items() if n}}


def plot_curves(log_path: Path, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    tr = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"]
    # a run without held-out data (--val "") has only its training losses to show
    fig, ax = plt.subplots(1, 4 if ev else 1, figsize=(20, 4) if ev else (6, 4), squeeze=False)
    ax = ax[0]
    for k in ("text", "listen", "flow"):
        ax[0].plot([r["step"] for r in tr], [r[k] for r in tr], label=f"train {k}", alpha=0.7)
    ax[0].set_yscale("log")
    if ev:
        _plot_evals(ax[1:], ev, plt.cm.tab20.colors)
    for a in ax:
        a.set_xlabel("step")
        a.legend(fontsize="small")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _plot_evals(ax, ev: list[dict], colors):
    """The held-out panels of plot_curves: losses, listening accuracy, news accuracy per family."""
    for k in ("text", "listen", "flow"):
        ax[0].plot([r["step"] for r in ev], [r[k] for r in ev], marker=".", label=f"held-out {k}")
    ax[0].set_yscale("log")
    ax[1].plot([r["step"] for r in ev], [r["listen_acc"] for r in ev], marker=".", label="held-out listening accuracy")
    early = [(r["step"], r["listen_acc_early"]) for r in ev if "listen_acc_early" in r]
    if early:
        ax[1].plot(*zip(*early), marker=".", label="... after the first blocks (--early-listen)")
    task = [(r["step"], r["listen_acc_task"]) for r in ev if "listen_acc_task" in r]  # logged since session 10
    if task:
        ax[1].plot(*zip(*task), marker=".", label="... on the task words")
    for engine in sorted({e for r in ev for e in r.get("listen_acc_task_by_engine", {})}):  # since session 30
        pts = [(r["step"], r["listen_acc_task_by_engine"][engine]) for r in ev
               if engine in r.get("listen_acc_task_by_engine", {})]
        ax[1].plot(*zip(*pts), marker=".", linestyle=":", label=f"... on the task words, {engine} voices")
    news = [r for r in ev if "news_acc_by_family" in r]  # logged since session 5
    ax[2].set_prop_cycle(color=colors)  # a colour per family (there are more than ten)
    for f in sorted({f for r in news for f in r["news_acc_by_family"]}):
        pts = [(r["step"], r["news_acc_by_family"][f]) for r in news if f in r["news_acc_by_family"]]
        ax[2].plot(*zip(*pts), marker=".", label=f)
    ax[2].set_title("held-out accuracy on the out tokens that carry news")


def train(c: TrainConfig, model_cfg: ModelConfig | None = None) -> Path:
    """Train (or resume, when ``c.out`` holds a training state) and return the run's folder. Bad options, shards or
    a broken state are refused with a ValueError before anything is written; a step whose loss is not finite stops
    the run (``Diverged``) with its last checkpoint kept."""
    c.check()
    rank, world, dev = _dist()
    if c.threads:
        torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed + rank)
    out = Path(c.out)
    shards = Shards(c.data)
    val_dir = c.val
    if c.val and not Path(c.val).is_dir():
        how = (f"write held-out shards there (`microturn synth --out {c.val} --split val --per-family 16 --shards`) "
               f"or give {option('val')} '' to train without evaluations")
        if c.val != TrainConfig.__dataclass_fields__["val"].default:  # a mistyped folder: no run without evaluations
            raise ValueError(f"{option('val')} {c.val}: no such folder; {how}")
        if rank == 0:  # the default's, not made yet
            print(f"warning: no evaluations in this run: the held-out shards {c.val} do not exist; {how}", flush=True)
        val_dir = None
    held_out = Shards(val_dir) if val_dir else None
    state_path = out / "train_state.pt"
    resumed = state_path.exists()
    saved = check_resume(c, out) if resumed else {}
    st = load_state(state_path) if resumed else None
    start = checkpoint.load(c.init) if c.init and not resumed else None
    # the run's model, to hold ``model_cfg`` to: the state's record of it (a Ctrl-C between the two files of a first
    # checkpoint leaves the state alone), or, from a state written before it kept one, the model folder's
    run_cfg = None
    if st is not None and "config" in st:
        run_cfg = ModelConfig.from_json(st["config"])
    elif resumed and (model_cfg is None or (out / "model").exists()):
        run_cfg = checkpoint.read_config(out / "model")[0]
    if model_cfg is None and resumed:  # a resumed run keeps its architecture (an --init's, say)
        model_cfg = run_cfg
    V = default_tokenizer().vocab_size
    cfg = model_cfg or (start.cfg if start is not None else preset(c.preset, vocab_size=V, layout=shards.layout))
    if c.audio_conv and cfg.audio_conv != c.audio_conv:
        if c.audio_conv < cfg.audio_conv:
            raise ValueError(f"audio_conv: the model already has {cfg.audio_conv} front-end layers; it can be given "
                             f"more (each new one starting at zero), not fewer ({c.audio_conv})")
        cfg = replace(cfg, audio_conv=c.audio_conv)
    if c.hear_back:
        cfg = replace(cfg, hear_back=True)
    if cfg.vocab_size < V or cfg.layout != shards.layout:
        raise ValueError(f"the model's vocabulary ({cfg.vocab_size} tokens) must hold the tokenizer's ({V}) and its "
                         f"layout must be the shards' ({shards.layout})")
    if held_out is not None and held_out.layout != cfg.layout:  # found now, not at the first evaluation
        raise ValueError(f"{option('val')} {c.val}: its shards' layout ({held_out.layout}) is not the model's "
                         f"({cfg.layout}); write them again (`microturn synth --shards`)")
    if run_cfg is not None and cfg.to_json() != run_cfg.to_json():
        differ = sorted(k for k, v in cfg.to_json().items() if run_cfg.to_json().get(k) != v)
        raise ValueError(f"{out} holds a run of another model than the one asked for (it differs in "
                         f"{', '.join(differ)}): resume it with its own, or give another --out to start a new run")
    if not 0 <= c.early_listen <= cfg.n_layer:
        raise ValueError(f"{option('early_listen')} must be 0 (off) or a block count in 1 .. {cfg.n_layer}, got "
                         f"{c.early_listen}")
    model = InteractionModel(cfg).to(dev)
    listen_weight = listen_weights(c, cfg.vocab_size)
    listen_weight = None if listen_weight is None else listen_weight.to(dev)
    # the weights the --init model lacks: kept in the state, so that a resumed run finds the same ones even when the
    # --init folder has moved or changed since (a state written before it kept them: read from the --init config)
    if st is not None and "added" in st:
        added = tuple(st["added"])
    else:
        init_cfg = checkpoint.read_config(c.init)[0] if c.init else cfg
        added = tuple([f"embed.audio.conv.convs.{i}." for i in range(init_cfg.audio_conv, cfg.audio_conv)] + (
            ["embed.heard."] if cfg.hear_back != init_cfg.hear_back else []))
    if start is not None:
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        if unexpected or [k for k in missing if not k.startswith(added)]:
            raise ValueError(f"--init {c.init}: weights that do not fit the model (missing {missing}, unexpected "
                             f"{unexpected})")
    batches = step_batches(c, shards, cfg, rank, world)
    step = 0
    if st is not None:  # resume exactly where the last checkpoint left off
        model.load_state_dict(st["model"])
        ranks = st["ranks"] if "ranks" in st else [{"rng": st["rng"]}]
        if rank < len(ranks):  # each rank resumes its own noise (its batches follow from the step alone)
            torch.set_rng_state(ranks[rank]["rng"])
            if dev.type == "cuda" and "cuda_rng" in ranks[rank]:  # the flow head's noise is drawn on the GPU
                torch.cuda.set_rng_state(ranks[rank]["cuda_rng"], dev)
        # else: a rank the checkpoint did not have (a run resumed on more processes) keeps its fresh seeds
        step = st["step"]
    sharded = world > 1 and c.fsdp
    net = model
    if sharded:  # FSDP2: each block's weights, then the rest, sharded over the ranks; the model is called as itself
        from torch.distributed.fsdp import fully_shard

        for t in [*model.parameters(), *model.buffers()]:  # rank 0's weights everywhere, as DDP starts
            dist.broadcast(t.data, 0)
        for b in model.transformer.blocks:
            fully_shard(b)
        fully_shard(model)
    elif world > 1:  # (every parameter gets a gradient in training, even a zero one; DDP still checks for others)
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    opt = optimizer(model, c, dev, added)  # after sharding: it holds the sharded parameters
    if st is not None:
        if st.get("opt_by_name") or sharded:  # the whole state by parameter name (a sharded run saves it so)
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            state = named_state(model, opt, st["opt"], by_index=not st.get("opt_by_name"))
            # (not strict: parameters no step has changed yet have no state, as in AdamW)
            set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            opt.load_state_dict(st["opt"])
    val = held_out if rank == 0 or sharded else None  # sharded, every rank takes part in each forward, evaluation's too
    writer = None
    lock, busy = None, ""
    if rank == 0:
        try:
            lock = run_lock(out)
        except ValueError as e:
            busy = str(e)
    if world > 1:  # every rank stops, not only rank 0 (the others would wait for it at their first collective)
        box = [busy]
        dist.broadcast_object_list(box, 0)
        busy = box[0]
    if busy:
        raise ValueError(busy)
    try:  # the lock goes whatever ends the run (a traceback would keep it: a retry in this process refused)
        if rank == 0:
            data = shards.summary()
            print(f"data: {data['sessions']:,} sessions in {data['folders']} shard folders under {c.data} (" +
                  ", ".join(f"{f} {n:,}" for f, n in data["by_family"].items()) + ")", flush=True)
            (out / "train_config.json").write_text(json.dumps(run_record(c, cfg, model.n_params(), saved, step, data),
                                                              indent=1))
            from torch.utils.tensorboard import SummaryWriter

            # the log from this step on is this run's: rows and events a resumed run trains again (or an old run's, in a
            # folder started over) are dropped
            writer = SummaryWriter(str(out / "tb"), purge_step=step + 1)
            cut_log(out / "log.jsonl", step)
        log = (out / "log.jsonl").open("a") if rank == 0 else None
        bar = tqdm(total=c.steps, initial=step, disable=rank != 0, desc="train", unit="step")
        t_last, tok_count = time.perf_counter(), 0
        model.train()
        end = min(c.steps, c.stop_at) if c.stop_at else c.steps
        loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(step, end), num_workers=c.workers,
                                             pin_memory=dev.type == "cuda", prefetch_factor=4 if c.workers else None,
                                             generator=torch.Generator().manual_seed(c.seed))  # not the model's RNG
        signum, saved_step = 0, step
        with StopRequest() as stop:  # before the loader's workers start: they inherit it
            for batch in loader:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, c) * g.get("lr_scale", 1.0)  # (runs saved before added_lr have none)
                batch = _to(batch, dev)
                r, gnorm = train_step(net, model, opt, batch, c, listen_weight)
                if not finite_step(r, gnorm, world):  # before anything of this step is logged or saved
                    bar.close()
                    if rank == 0:
                        log.close()
                        writer.close()
                    kept = (f"the checkpoint of step {saved_step} in {out} is kept" if saved_step
                            else "no checkpoint saved")
                    raise Diverged(f"step {step + 1}: the training loss is {r['loss'].item()} and the gradient norm "
                                   f"{float(gnorm)}: stopped without saving this step ({kept}); try a lower --lr")
                step += 1
                tok_count += int(batch["valid"].sum()) * cfg.layout.length * world
                if rank == 0:
                    now = time.perf_counter()
                    tps = tok_count / (now - t_last)
                    bar.set_postfix(loss=f"{r['loss'].item():.3f}", text=f"{r['text'].mean().item():.3f}",
                                    tok_s=f"{tps:,.0f}")
                    bar.update(1)
                    if step % 25 == 0:
                        row = {"kind": "train", "step": step, "lr": lr_at(step, c), "loss": r["loss"].item(),
                               "text": r["text"].mean().item(), "listen": r["listen"].mean().item(),
                               "listen_early": r["listen_early"].mean().item(), "flow": r["flow"].mean().item(),
                               "moe": r["moe"].item(), "grad_norm": float(gnorm), "tokens_per_s": tps,
                               "time": time.time()}
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        for k in ("loss", "text", "listen", "flow", "grad_norm", "tokens_per_s", "lr"):
                            writer.add_scalar(f"train/{k}", row[k], step)
                        t_last, tok_count = now, 0
                if val is not None and (step % c.eval_every == 0 or step == c.steps):
                    e = evaluate(model, val, c.eval_batches, c.batch, dev, early_listen=c.early_listen)
                    if rank == 0:
                        bar.write(_log_eval(e, step, log, writer, c.early_listen))
                        plot_curves(out / "log.jsonl", out / "curves.png")
                signum = stop.agreed(world, dev)
                if step % c.ckpt_every == 0 or step == end or signum:
                    ranks = [None] * world
                    mine = {"rng": torch.get_rng_state()} | (
                        {"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {})
                    if world > 1:
                        dist.all_gather_object(ranks, mine)
                    else:
                        ranks = [mine]
                    model_state, opt_state = full_state(model, opt, sharded)
                    if rank == 0:
                        save_state(out, model, model_state, opt_state, ranks, step, c, by_name=sharded, added=added)
                    saved_step = step
                if signum:
                    break
        bar.close()
        if dist.is_initialized():
            dist.barrier()
        if signum:
            raise Stopped(step, signum, out)
        return out
    finally:
        if lock is not None:
            lock.close()


def run_record(c: TrainConfig, cfg: ModelConfig, params: int, saved: dict, step: int, data: dict) -> dict:
    """What ``train_config.json`` holds: the options (as last given), the model and its size, ``data_read`` (what
    ``Shards.summary`` says of the shards last read), and, for a resumed run, ``resumed``: each time it was resumed
    with options other than those before, the step and the options that changed, as [before, now] (its
    ``MODEL_OPTIONS`` never change)."""
    now = asdict(c)
    changed = {k: [saved[k], v] for k, v in now.items() if k in saved and saved[k] != v}
    resumed = saved.get("resumed", []) + ([{"step": step, "changed": changed}] if changed else [])
    return now | {"model": cfg.to_json(), "params": params, "data_read": data} | (
        {"resumed": resumed} if resumed else {})


def _log_eval(e: dict, step: int, log, writer, early_listen: int) -> str:
    """An evaluation into log.jsonl and TensorBoard; returns the line the progress bar shows."""
    log.write(json.dumps({"kind": "eval", "step": step} | e) + "\n")
    log.flush()
    for k in ("text", "listen", "flow", "listen_acc", "listen_acc_task"):
        writer.add_scalar(f"eval/{k}", e[k], step)
    for f, a in e["news_acc_by_family"].items():
        writer.add_scalar(f"eval_news_acc/{f}", a, step)
    for g, a in e["listen_acc_task_by_engine"].items():
        writer.add_scalar(f"eval_listen_task/{g}", a, step)
    news = " ".join(f"{f} {a:.0%}" for f, a in sorted(e["news_acc_by_family"].items()))
    voices = ", ".join(f"{g} {a:.1%}" for g, a in sorted(e["listen_acc_task_by_engine"].items()))
    early = f" ({e['listen_acc_early']:.1%} early)" if early_listen else ""
    return (f"step {step}: held-out text {e['text']:.3f} listen {e['listen']:.3f} flow {e['flow']:.3f} listening "
            f"accuracy {e['listen_acc']:.1%}{early} (task words {e['listen_acc_task']:.1%}: {voices}); news "
            f"accuracy: {news}")


def named_state(model, opt, state: dict, by_index: bool) -> dict:
    """An optimiser state keyed by parameter name, as a sharded run saves it: ``by_index``, it is keyed as torch keys
    it (by the parameters' places in ``opt``'s groups) and renamed, so that an unsharded run's state resumes sharded.
    Each group takes ``opt``'s own ``fused`` (sharded parameters take no fused kernel, a run on one GPU does)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]

    def key(k):
        return order[k] if by_index else k

    return {"state": {key(k): v for k, v in state["state"].items()},
            "param_groups": [g | {"params": [key(k) for k in g["params"]], "fused": now.get("fused")}
                             for g, now in zip(state["param_groups"], opt.param_groups)]}


def full_state(model, opt, sharded: bool) -> tuple[dict, dict]:
    """The model's and the optimiser's whole state. Sharded (FSDP), it is gathered from every rank's shards onto rank
    0's CPU, a collective every rank takes part in (the others get nothing), and the optimiser's is keyed by parameter
    name."""
    if not sharded:
        return model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=o), get_optimizer_state_dict(model, opt, options=o)


def save_state(out: Path, model, model_state: dict, opt_state: dict, ranks: list[dict], step: int, c: TrainConfig,
               by_name: bool = False, added: tuple[str, ...] = ()):
    """Atomic checkpoint: the full training state (with every rank's random state, the model's config and the
    weights an --init model lacked, ``added``), plus the model alone as safetensors for serving. ``by_name``: the
    optimiser's state is keyed by parameter name (``full_state`` of a sharded run), and resumes with or without
    sharding."""
    tmp = out / "train_state.pt.tmp"
    torch.save({"model": model_state, "opt": opt_state, "ranks": ranks, "step": step,
                "config": model.cfg.to_json(), "added": list(added)}
               | ({"opt_by_name": True} if by_name else {}), tmp)
    os.replace(tmp, out / "train_state.pt")
    checkpoint.save(model, out / "model", extra={"step": step, "train": asdict(c)}, state=model_state)
