"""Training: exact resume after an interruption, the schedule, and the multi-process (DDP, gloo) path."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.codecs import dmel
from microturn.data.shards import write_shards
from microturn.model import checkpoint
from microturn.model.config import ModelConfig, preset
from microturn.model.model import InteractionModel
from microturn.stream.tokenizer import CUE_WORDS, EOT, HEARD, NOTE, default_tokenizer, is_heard
from microturn.train.data import augment, collate
from microturn.train.data import Shards
from microturn.train.loop import TrainConfig, evaluate, lr_at, plot_curves, task_word_mask, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_shards(d / "train", 2, seed=0, families=("turn", "cuespeak"), workers=1)
    write_shards(d / "val", 1, seed=1, split="val", families=("turn", "cuespeak"), workers=1)
    return d


def _model_cfg():
    return ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32)


def _weights(out):
    return torch.load(Path(out) / "train_state.pt", weights_only=False)["model"]


def test_interrupted_training_resumes_exactly(shards, tmp_path):
    c = TrainConfig(data=str(shards / "train"), val=str(shards / "val"), steps=4, batch=2, warmup=2, eval_every=2,
                    ckpt_every=2, eval_batches=1, lr=1e-3, conversations=1.0, mix="cuespeak=2", recap_weight=0.1)
    torch.manual_seed(0)
    train(replace(c, out=str(tmp_path / "once")), _model_cfg())
    train(replace(c, out=str(tmp_path / "twice"), stop_at=2), _model_cfg())  # interrupted after step 2
    assert torch.load(tmp_path / "twice" / "train_state.pt", weights_only=False)["step"] == 2
    torch.manual_seed(123)  # whatever the process state, the checkpoint decides
    train(replace(c, out=str(tmp_path / "twice")), _model_cfg())  # the same command again: resumes
    a, b = _weights(tmp_path / "once"), _weights(tmp_path / "twice")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training differs from the uninterrupted run"
    m = checkpoint.load(tmp_path / "twice" / "model")  # the serving checkpoint is written beside the state
    assert m.checkpoint_info["step"] == 4
    assert (tmp_path / "twice" / "curves.png").exists() and (tmp_path / "twice" / "log.jsonl").exists()
    evals = [json.loads(r) for r in (tmp_path / "twice" / "log.jsonl").read_text().splitlines() if '"eval"' in r]
    news = evals[-1]["news_acc_by_family"]  # held-out accuracy on the out tokens that carry news, per family
    assert set(news) <= {"turn", "cuespeak"} and all(0.0 <= a <= 1.0 for a in news.values())


def test_ctrl_c_saves_a_checkpoint_the_same_command_resumes(shards, tmp_path):
    """Ctrl-C (SIGINT to the process group, the loader's worker included) stops after the step in progress with a
    checkpoint and a failing exit status; the same command resumes as if never stopped."""
    def run(out, *extra, stop=False):
        cmd = [str(Path(sys.executable).parent / "microturn"), "train", "--preset", "cpu", "--data",
               str(shards / "train"), "--val", "", "--out", str(tmp_path / out), "--steps", "400", "--batch", "1",
               "--warmup", "2", "--ckpt-every", "1000", "--threads", "1", "--workers", "1", *extra]
        p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
        err, stepped = [], threading.Event()

        def read():
            for chunk in iter(lambda: p.stderr.read(64), ""):
                err.append(chunk)
                if "tok_s=" in "".join(err[-3:]):  # a step is done: the handler is in place
                    stepped.set()
        t = threading.Thread(target=read)
        t.start()
        try:
            if stop:
                deadline = time.monotonic() + 300
                while not stepped.wait(0.2):
                    assert p.poll() is None and time.monotonic() < deadline, "".join(err)[-3000:]
                os.killpg(p.pid, signal.SIGINT)
            p.wait(300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            t.join()
        return p.returncode, "".join(err)

    rc, err = run("stopped", stop=True)
    assert rc == 128 + signal.SIGINT, err[-3000:]
    step = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=False)["step"]
    assert f"stopped by SIGINT after step {step}: checkpoint saved" in err and 1 <= step < 400
    assert checkpoint.load(tmp_path / "stopped" / "model").checkpoint_info["step"] == step
    assert run("stopped", "--stop-at", str(step + 2))[0] == 0  # the same command (to two steps on) resumes
    assert run("once", "--stop-at", str(step + 2))[0] == 0
    a, b = _weights(tmp_path / "once"), _weights(tmp_path / "stopped")
    assert all(torch.equal(a[k], b[k]) for k in a), "the run stopped by Ctrl-C and resumed differs"


def test_init_starts_from_a_checkpoint(shards, tmp_path):
    """--init: the weights of a checkpoint, a new optimiser and schedule; a model of a smaller vocabulary than the
    tokenizer's is refused."""
    c = TrainConfig(data=str(shards / "train"), val=None, steps=2, batch=2, warmup=1, ckpt_every=2, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    train(replace(c, out=str(tmp_path / "b"), init=str(tmp_path / "a" / "model"), lr=0.0, min_lr=0.0))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # learning rate 0: still the initial weights
    small = ModelConfig(depth=2, vocab_size=300, flow_width=32)
    checkpoint.save(InteractionModel(small), tmp_path / "small")
    with pytest.raises(ValueError, match="vocabulary"):
        train(replace(c, out=str(tmp_path / "c"), init=str(tmp_path / "small")))


def test_audio_conv_is_added_to_an_init_model_that_starts_as_it_was(shards, tmp_path):
    """--audio-conv n with --init: the model gets the front-end's layers, starting at zero, so it computes what
    the checkpoint did; training moves them; its checkpoint keeps them; a model with some is given more the same
    way (only the new ones are the run's added weights); fewer are refused."""
    from microturn.train.data import Shards

    c = TrainConfig(data=str(shards / "train"), val=None, steps=2, batch=2, warmup=1, ckpt_every=2, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    train(replace(c, out=str(tmp_path / "b"), init=str(tmp_path / "a" / "model"), audio_conv=2, lr=0.0, min_lr=0.0))
    a, b = checkpoint.load(tmp_path / "a" / "model").eval(), checkpoint.load(tmp_path / "b" / "model").eval()
    assert a.cfg.audio_conv == 0 and b.cfg.audio_conv == 2
    ds = Shards(shards / "train")
    batch = collate([ds.session(0)], ds.families)
    with torch.no_grad():
        torch.testing.assert_close(a.hidden(batch), b.hidden(batch), atol=0, rtol=0)
    train(replace(c, out=str(tmp_path / "c"), init=str(tmp_path / "a" / "model"), audio_conv=2))
    conv = checkpoint.load(tmp_path / "c" / "model").embed.audio.conv.convs
    assert all(x.weight.abs().sum() > 0 for x in conv)
    train(replace(c, out=str(tmp_path / "d"), init=str(tmp_path / "c" / "model"), audio_conv=4, lr=0.0, min_lr=0.0))
    c2, d = checkpoint.load(tmp_path / "c" / "model").eval(), checkpoint.load(tmp_path / "d" / "model").eval()
    assert d.cfg.audio_conv == 4 and d.embed.audio.context > c2.embed.audio.context
    assert [bool((x.weight == 0).all()) for x in d.embed.audio.conv.convs] == [False, False, True, True]
    with torch.no_grad():
        torch.testing.assert_close(c2.hidden(batch), d.hidden(batch), atol=0, rtol=0)
    state = torch.load(tmp_path / "d" / "train_state.pt", weights_only=False)
    assert state["added"] == ["embed.audio.conv.convs.2.", "embed.audio.conv.convs.3."]
    with pytest.raises(ValueError, match="audio_conv.*not fewer"):
        train(replace(c, out=str(tmp_path / "e"), init=str(tmp_path / "c" / "model"), audio_conv=1))


def test_hear_back_is_added_to_an_init_model_that_starts_as_it_was(shards, tmp_path):
    """--hear-back with --init: the model gets the map of the words it heard, starting at zero, so it computes what
    the checkpoint did; training moves it (the training forward reads back the model's own words); its checkpoint
    keeps it."""
    from microturn.train.data import Shards

    c = TrainConfig(data=str(shards / "train"), val=None, steps=2, batch=2, warmup=1, ckpt_every=2, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    train(replace(c, out=str(tmp_path / "b"), init=str(tmp_path / "a" / "model"), hear_back=True, lr=0.0,
                  min_lr=0.0))
    a, b = checkpoint.load(tmp_path / "a" / "model").eval(), checkpoint.load(tmp_path / "b" / "model").eval()
    assert not a.cfg.hear_back and b.cfg.hear_back
    ds = Shards(shards / "train")
    batch = collate([ds.session(0)], ds.families)
    with torch.no_grad():
        torch.testing.assert_close(a.hidden(batch), b.hidden(batch), atol=0, rtol=0)
    train(replace(c, out=str(tmp_path / "c"), init=str(tmp_path / "a" / "model"), hear_back=True))
    assert checkpoint.load(tmp_path / "c" / "model").embed.heard.weight.abs().sum() > 0


def test_added_weights_learn_at_their_own_rate_and_resume(shards, tmp_path):
    """--added-lr scales the learning rate of the weights the --init model lacks (here the hear-back map, which
    starts at zero) and of no other; a run stopped and resumed keeps that optimiser layout."""
    c = TrainConfig(data=str(shards / "train"), val=None, steps=2, batch=2, warmup=1, ckpt_every=1, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    init = str(tmp_path / "a" / "model")
    a = checkpoint.load(init)
    moved = {}
    for scale in (1.0, 10.0):
        train(replace(c, out=str(tmp_path / f"x{scale}"), init=init, hear_back=True, added_lr=scale, steps=1))
        m = checkpoint.load(tmp_path / f"x{scale}" / "model")
        moved[scale] = (m.embed.heard.weight.abs().max().item(), (m.listen.weight - a.listen.weight).abs().max().item())
    # Adam's first step moves each weight by about its learning rate
    assert moved[10.0][0] == pytest.approx(10 * moved[1.0][0], rel=0.05)
    assert moved[10.0][1] == pytest.approx(moved[1.0][1], rel=1e-4)
    run = replace(c, out=str(tmp_path / "r"), init=init, hear_back=True, added_lr=10.0)
    train(replace(run, stop_at=1))
    train(run)  # resumes from step 1 with the same three parameter groups
    assert checkpoint.load(tmp_path / "r" / "model").embed.heard.weight.abs().max() > moved[10.0][0]
    with pytest.raises(ValueError, match="added_lr"):
        train(replace(run, out=str(tmp_path / "bad"), added_lr=0.0))


def test_a_run_resumes_from_its_state_alone(shards, tmp_path):
    """The state holds what resuming needs: a run killed between the two files of its first checkpoint (the state
    written, the model folder not) and whose --init folder has gone since resumes; the log keeps no row of the steps
    the kill discarded."""
    c = TrainConfig(data=str(shards / "train"), val=str(shards / "val"), steps=2, batch=2, warmup=1, ckpt_every=1,
                    eval_every=1, eval_batches=1, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    shutil.copytree(tmp_path / "a" / "model", tmp_path / "init")
    run = replace(c, out=str(tmp_path / "r"), init=str(tmp_path / "init"), hear_back=True, added_lr=10.0)
    train(replace(run, stop_at=1))
    shutil.rmtree(tmp_path / "init")
    shutil.rmtree(tmp_path / "r" / "model")
    log = tmp_path / "r" / "log.jsonl"
    with log.open("a") as f:  # what a kill after step 2 was logged, before its checkpoint, leaves
        f.write(json.dumps({"kind": "eval", "step": 2, "loss": -1.0}) + "\n" + '{"kind": "train", "st')
    train(run)
    m = checkpoint.load(tmp_path / "r" / "model")
    assert m.cfg.hear_back and m.checkpoint_info["step"] == 2
    rows = [json.loads(r) for r in log.read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [1, 2] and all(r.get("loss") != -1.0 for r in rows)
    (tmp_path / "r" / "train_state.pt").unlink()  # started over in its folder: the old run's rows go
    train(replace(c, out=str(tmp_path / "r"), steps=1), _model_cfg())
    assert [json.loads(r)["step"] for r in log.read_text().splitlines()] == [1]


def test_a_run_from_an_init_model_resumes_with_its_architecture(shards, tmp_path):
    """A fine-tuning run interrupted and started again keeps the --init model's architecture (here one with the
    audio front-end, which the preset lacks) rather than the preset's."""
    c = TrainConfig(data=str(shards / "train"), val=None, steps=2, batch=2, warmup=1, ckpt_every=1, lr=1e-3)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    train(replace(c, out=str(tmp_path / "b"), init=str(tmp_path / "a" / "model"), audio_conv=2))
    fine = replace(c, out=str(tmp_path / "c"), init=str(tmp_path / "b" / "model"))
    train(replace(fine, stop_at=1))
    train(fine)  # resumes: the preset has no front-end, the run's model does
    m = checkpoint.load(tmp_path / "c" / "model")
    assert m.cfg.audio_conv == 2 and m.cfg.depth == _model_cfg().depth and m.checkpoint_info["step"] == 2


def test_early_listen_is_trained_and_reported(shards, tmp_path):
    """--early-listen k: the listening loss after k blocks is logged, its held-out accuracy reported; a block count
    the model does not have is refused before training starts."""
    c = TrainConfig(data=str(shards / "train"), val=str(shards / "val"), steps=2, batch=2, warmup=1, ckpt_every=2,
                    eval_every=2, eval_batches=1, early_listen=1, out=str(tmp_path / "a"))
    train(c, _model_cfg())
    rows = [json.loads(r) for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    ev = [r for r in rows if r["kind"] == "eval"][-1]
    assert 0.0 <= ev["listen_acc_early"] <= 1.0
    with pytest.raises(ValueError, match="early_listen"):
        train(replace(c, out=str(tmp_path / "b"), early_listen=_model_cfg().n_layer + 1), _model_cfg())


def test_task_listen_weighs_the_task_words_and_reports_them(shards, tmp_path):
    """--task-listen w: the task words' listening targets (each word's first token) weigh w; the held-out accuracy
    on them is reported; a weight that is not positive is refused."""
    tok = default_tokenizer()
    mask = task_word_mask(tok, tok.vocab_size)
    assert mask[tok.encode_word("banana")[0]] and mask[tok.encode_word("seventy")[0]]
    assert not mask[tok.encode_word("bought")[0]] and not mask[tok.encode_word("kitchen")[0]]  # filler talk
    c = TrainConfig(data=str(shards / "train"), val=str(shards / "val"), steps=2, batch=2, warmup=1, ckpt_every=2,
                    eval_every=2, eval_batches=1, task_listen=3.0, out=str(tmp_path / "a"))
    train(c, _model_cfg())
    ev = [json.loads(r) for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines() if '"eval"' in r][-1]
    assert 0.0 <= ev["listen_acc_task"] <= 1.0
    with pytest.raises(ValueError, match="task_listen"):
        train(replace(c, out=str(tmp_path / "b"), task_listen=0.0), _model_cfg())


def test_task_word_listening_is_reported_by_voice_engine(shards):
    """The held-out task-word accuracy split by the user's voice engine (from each session's voice id): one entry per
    engine scored, each its hits over its tokens, so one engine alone gives the overall figure and two bracket it."""
    from microturn.train.data import Shards
    from microturn.train.loop import evaluate

    val, model = Shards(shards / "train"), InteractionModel(_model_cfg())
    info = val.info
    run = lambda: evaluate(model, val, n_batches=2, batch=4, dev=torch.device("cpu"))  # noqa: E731
    val.info = lambda i: info(i) | {"voice": "flite:kal"}
    ev = run()
    assert ev["listen_acc_task_by_engine"] == {"flite": pytest.approx(ev["listen_acc_task"])}
    val.info = lambda i: info(i) | {"voice": "flite:kal" if i % 2 else "espeak:en-us"}
    ev = run()
    by = ev["listen_acc_task_by_engine"]
    assert set(by) == {"espeak", "flite"} and all(0.0 <= a <= 1.0 for a in by.values())
    assert min(by.values()) - 1e-9 <= ev["listen_acc_task"] <= max(by.values()) + 1e-9


def test_curriculum_start_sets_the_hardest_session_drawn_first(shards, tmp_path):
    """--curriculum: at the schedule's start only sessions up to that difficulty are drawn (the easy half here), and
    at 1 every session is; by the end of the schedule every session is drawn either way."""
    import numpy as np

    from microturn.train.data import Curriculum, Shards

    sh = Shards(shards / "train")

    def hard_share(start, progress):
        cur = Curriculum(sh, seed=3, start=start)
        for idx in cur.by_family.values():  # each family: its first half easy, its second half hard
            cur.diff[idx] = np.where(np.arange(len(idx)) < (len(idx) + 1) // 2, 0.1, 0.9)
        drawn = cur.sample(400, progress)
        return float(np.mean(cur.diff[drawn] > 0.5))

    assert hard_share(0.3, 0.0) == 0.0
    assert 0.2 < hard_share(1.0, 0.0) < 0.8
    assert 0.2 < hard_share(0.3, 1.0) < 0.8
    c = TrainConfig(data=str(shards / "train"), val=None, out=str(tmp_path / "x"), steps=1, batch=1, curriculum=-0.1)
    with pytest.raises(ValueError, match="curriculum"):
        train(c, _model_cfg())
    assert not (tmp_path / "x" / "model").exists()  # refused before anything was written


def test_train_draws_by_its_curriculum_option(shards, tmp_path, monkeypatch):
    import microturn.train.loop as loop

    starts = []

    class Recording(loop.Curriculum):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            starts.append(self.start)

    monkeypatch.setattr(loop, "Curriculum", Recording)
    train(TrainConfig(data=str(shards / "train"), val=None, out=str(tmp_path / "r"), steps=1, batch=1, warmup=1,
                      ckpt_every=1, curriculum=1.0), _model_cfg())
    assert starts == [1.0]


def test_a_data_folder_may_link_parts_written_elsewhere(shards, tmp_path):
    """A run's data folder of symbolic links to other runs' parts reads them all (pathlib's ``**`` skipped linked
    folders without a word before Python 3.13), and a part linked twice counts once. Hidden folders count, as they
    did; a folder `microturn synth` is still writing (``*.partial``) does not."""
    from microturn.train.data import Shards, shard_dirs

    whole = Shards(shards / "train")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a").symlink_to(shards / "train", target_is_directory=True)
    (tmp_path / "mine" / "b").symlink_to(shards / "train", target_is_directory=True)
    (tmp_path / "mine" / ".own").symlink_to(shards / "val", target_is_directory=True)  # hidden names count too
    assert len(shard_dirs(tmp_path / "mine")) == len(shard_dirs(shards))
    assert len(Shards(tmp_path / "mine")) == len(whole) + len(Shards(shards / "val"))
    (tmp_path / "mine" / "c.partial").symlink_to(shards / "val", target_is_directory=True)  # synth still writing
    assert len(shard_dirs(tmp_path / "mine")) == len(shard_dirs(shards))


def test_batches_are_a_pure_function_of_seed_step_and_rank(shards):
    """A step's batch is the same however it is made (again, in another process): resuming and loading ahead need no
    sampler state. Another rank or step draws another batch."""
    from microturn.train.data import Curriculum, Shards, StepBatches

    sh = Shards(shards / "train")

    def batches(rank, seed=0, world=1):
        return StepBatches(sh, Curriculum(sh, seed=99), batch=3, steps=8, seed=seed, rank=rank, conversations=0.5,
                           augment=True, max_len=400, world=world)

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    b = batches(0)
    assert same(b[5], batches(0)[5])
    loader = torch.utils.data.DataLoader(b, batch_size=None, sampler=range(3, 6), num_workers=2)
    assert all(same(x, b[i]) for x, i in zip(loader, range(3, 6)))  # made in worker processes: the same batches
    assert not all(same(batches(0, world=2)[i], batches(1, world=2)[i]) for i in range(4))
    with pytest.raises(ValueError, match="rank 1 is not one of the 1 ranks"):
        batches(1)
    assert not all(same(b[i], b[i + 1]) for i in range(4))
    assert not all(same(b[i], batches(0, seed=1)[i]) for i in range(4))


def test_bucketed_batches_hold_the_same_items_grouped_by_length(shards, tmp_path):
    """--bucket G: the items of G consecutive steps, each altered exactly as without buckets, dealt out in batches of
    like lengths (less padding); still a pure function of the step, also in worker processes."""
    import hashlib

    from microturn.train.data import Curriculum, Shards, StepBatches

    sh = Shards(shards / "train")

    def batches(bucket):
        return StepBatches(sh, Curriculum(sh, seed=99), batch=3, steps=16, seed=4, rank=0, conversations=0.3,
                           augment=True, max_len=400, openings=0.3, bucket=bucket)

    def items(b):  # each item's arrays, as a fingerprint, and its micro-turns
        return [(hashlib.sha1(b"".join(b[k][i, : int(b["valid"][i].sum())].numpy().tobytes()
                                       for k in ("clock", "audio", "out", "listen"))).hexdigest(),
                 int(b["valid"][i].sum())) for i in range(len(b["valid"]))]

    plain, bucketed = batches(1), batches(4)
    for first in (0, 4):
        was = [items(plain[s]) for s in range(first, first + 4)]
        now = [items(bucketed[s]) for s in range(first, first + 4)]
        assert sorted(sum(was, [])) == sorted(sum(now, []))  # the same items, each altered alike
        assert sum(max(n for _, n in b) for b in now) < sum(max(n for _, n in b) for b in was)  # less padding
        spans = sorted((min(n for _, n in b), max(n for _, n in b)) for b in now)
        assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))  # neighbours by length
    for s in range(8):  # the step's slot of its bucket's items, sorted by length
        first, k = s - s % 4, bucketed.slot(s)
        lengths = sorted(bucketed.length(it) for t in range(first, first + 4) for it in bucketed.draw(t))
        assert sorted(bucketed[s]["valid"].sum(1).tolist()) == lengths[3 * k : 3 * k + 3]
    assert len({bucketed.slot(s) for s in range(4)}) == 4
    again = batches(4)
    loader = torch.utils.data.DataLoader(again, batch_size=None, sampler=range(5, 8), num_workers=2)
    assert all(items(x) == items(bucketed[s]) for x, s in zip(loader, range(5, 8)))
    with pytest.raises(ValueError, match="bucket"):
        train(TrainConfig(data=str(shards / "train"), val="", steps=1, bucket=0, out=str(tmp_path / "a")), _model_cfg())
    assert not (tmp_path / "a").exists()  # refused before anything was written


@pytest.mark.parametrize("bucket", [1, 4])
def test_ranks_deal_out_one_draw_in_turn_by_length(shards, bucket):
    """Under DDP a step's items are drawn once for all ranks, sorted by length and dealt out in turn, so the ranks'
    batches are alike in length (none waits long for another) and together are the batch one process would draw."""
    import hashlib

    from microturn.train.data import Curriculum, Shards, StepBatches

    sh = Shards(shards / "train")

    def batches(rank, world, batch):
        return StepBatches(sh, Curriculum(sh, seed=99), batch=batch, steps=16, seed=4, rank=rank, world=world,
                           conversations=0.3, augment=True, max_len=400, openings=0.3, bucket=bucket)

    def items(b):
        return sorted(hashlib.sha1(b"".join(b[k][i, : int(b["valid"][i].sum())].numpy().tobytes()
                                            for k in ("clock", "audio", "out", "listen"))).hexdigest()
                      for i in range(len(b["valid"])))

    one, ranks = batches(0, 1, 6), [batches(r, 2, 3) for r in (0, 1)]
    for s in range(8):
        got = [r[s] for r in ranks]
        assert items(one[s]) == sorted(items(got[0]) + items(got[1]))  # the same items, each altered alike
        lengths = sorted(one[s]["valid"].sum(1).tolist())
        assert [sorted(b["valid"].sum(1).tolist()) for b in got] == [lengths[0::2], lengths[1::2]]


def test_openings_are_the_first_seconds_of_sessions(shards):
    """--openings: those batches hold sessions cut to their first 4-9 s, every array the session's own beginning."""
    import numpy as np

    from microturn.train.data import OPENING, Curriculum, Shards, StepBatches, collate

    sh = Shards(shards / "train")

    cut = StepBatches(sh, Curriculum(sh, seed=99), batch=3, steps=8, seed=0, rank=0, conversations=0.5,
                      augment=False, max_len=400, openings=1.0)
    was_cut = 0
    for step in range(4):
        b = cut[step]
        rng = np.random.default_rng([0, 0, step])
        rng.random()  # as StepBatches draws: whether an opening, its length, then the sessions
        n = int(rng.integers(*OPENING))
        full = collate([sh.session(i) for i in Curriculum(sh, seed=99).sample(3, step / 8, rng)], sh.families)
        T = b["clock"].shape[1]
        assert OPENING[0] <= n < OPENING[1] and T == min(n, full["clock"].shape[1])
        was_cut += T < full["clock"].shape[1]
        for k in ("out", "listen", "audio", "text_in", "recap"):
            assert torch.equal(b[k], full[k][:, :T])
    assert was_cut  # the test shards' sessions are long enough that some were cut


def test_shares_of_batches_outside_0_to_1_are_refused(shards, tmp_path):
    for bad in (dict(openings=1.5), dict(conversations=-0.1)):
        c = TrainConfig(data=str(shards / "train"), val=None, out=str(tmp_path / "x"), steps=1, batch=1, **bad)
        with pytest.raises(ValueError, match="share of the batches"):
            train(c, _model_cfg())
    assert not (tmp_path / "x" / "model").exists()  # refused before anything was written


def test_held_out_shards_of_another_layout_are_refused(shards, tmp_path):
    """Held-out shards written for another layout are refused before training, not at the first evaluation."""
    from microturn.stream.layout import Layout

    write_shards(tmp_path / "val", 1, seed=1, split="val", families=("turn",), workers=1, layout=Layout(n_out=2))
    c = TrainConfig(data=str(shards / "train"), val=str(tmp_path / "val"), out=str(tmp_path / "x"), steps=1,
                    batch=1, warmup=1, ckpt_every=1)
    with pytest.raises(ValueError, match="layout .* is not the model's"):
        train(c, _model_cfg())
    assert not (tmp_path / "x").exists()


def test_one_process_trains_in_a_folder_at_a_time(shards, tmp_path):
    """A second start in a run's folder while one trains there is refused (they would share its state files)."""
    from microturn.train.loop import run_lock

    c = TrainConfig(data=str(shards / "train"), val="", out=str(tmp_path / "x"), steps=1, batch=1, warmup=1,
                    ckpt_every=1)
    held = run_lock(tmp_path / "x")  # as a run in progress holds it
    with pytest.raises(ValueError, match="being trained by another process"):
        train(c, _model_cfg())
    held.close()
    train(c, _model_cfg())
    train(replace(c, steps=2), _model_cfg())  # the lock went with the run that held it
    import microturn.train.loop as loop

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(loop, "train_step", broken)
        with pytest.raises(RuntimeError, match="out of memory"):
            train(replace(c, steps=3), _model_cfg())
    train(replace(c, steps=3), _model_cfg())  # a run that failed let go of its folder too


def test_missing_held_out_shards_are_refused(shards, tmp_path):
    """A --val folder that is not there (mistyped) is refused before anything is written; '' trains without."""
    c = TrainConfig(data=str(shards / "train"), val=str(tmp_path / "no-such-shards"), out=str(tmp_path / "x"),
                    steps=1, batch=1, warmup=1, ckpt_every=1)
    with pytest.raises(ValueError, match="no-such-shards: no such folder"):
        train(c, _model_cfg())
    assert not (tmp_path / "x").exists()
    train(replace(c, val=""), _model_cfg())
    assert checkpoint.load(tmp_path / "x" / "model").checkpoint_info["step"] == 1


def test_the_default_held_out_shards_missing_are_warned_of(shards, tmp_path, monkeypatch, capsys):
    """The default --val (data/shards/val) not written yet: the run trains without evaluations, and says so."""
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(data=str(shards / "train"), out="x", steps=1, batch=1, warmup=1, ckpt_every=1), _model_cfg())
    assert "no evaluations in this run: the held-out shards data/shards/val do not exist" in capsys.readouterr().out


def test_workers_train_the_same_model(shards, tmp_path):
    """--workers N: batches made in worker processes train exactly the weights made in the training process."""
    c = TrainConfig(data=str(shards / "train"), val=None, steps=3, batch=2, warmup=1, ckpt_every=3, lr=1e-3,
                    conversations=0.5)
    torch.manual_seed(0)
    train(replace(c, out=str(tmp_path / "a")), _model_cfg())
    torch.manual_seed(0)
    train(replace(c, out=str(tmp_path / "b"), workers=2), _model_cfg())
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_leaves_the_training_noise_alone(shards):
    """evaluate draws its flow-loss noise from a generator of its own: torch's global random state (the run's
    training noise) is where it was, and two evaluations agree exactly, whichever ranks or how often a run evaluates."""
    torch.manual_seed(3)
    model = InteractionModel(_model_cfg())
    before = torch.get_rng_state()
    a = evaluate(model, Shards(shards / "val"), 1, 2, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)
    assert evaluate(model, Shards(shards / "val"), 1, 2, torch.device("cpu"))["flow"] == a["flow"]


def test_lr_schedule_warms_up_and_decays():
    c = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(100, c) == pytest.approx(0.1) and lr_at(55, c) == pytest.approx(0.55, abs=0.01)


def test_train_cli_has_one_documented_option_per_config_field(capsys):
    """`microturn train` is made from TrainConfig: every field is an option with its help, values parse to the
    field's type, --no-augment turns augmentation off, and options left out keep the dataclass's defaults."""
    from dataclasses import fields

    from microturn.cli import _train_config, build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    for f in fields(TrainConfig):
        assert f.metadata["help"] and f"--{'no-' if f.default is True else ''}{f.name.replace('_', '-')} " in shown
    c = _train_config(build_parser().parse_args(["train", "--openings", "0.5", "--weight-decay", "0.1", "--val", "v",
                                                 "--steps", "7", "--no-augment", "--fsdp"]))
    assert (c.openings, c.weight_decay, c.val, c.steps, c.augment, c.fsdp) == (0.5, 0.1, "v", 7, False, True)
    assert c.lr == TrainConfig.lr and c.mix == "" and isinstance(c.steps, int)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--steps", "many"])


def test_accum_takes_the_same_step_in_pieces(shards, monkeypatch):
    """--accum 3 runs a batch of 5 sessions of unlike lengths in pieces of 2, 2 and 1, each cut to its own longest
    session, and adds up the same gradients, losses and gradient norm as the whole batch (the flow loss's noise made
    the same for both: it is drawn piece by piece)."""
    from microturn.model import heads
    from microturn.train.loop import optimizer, pieces, train_step

    data = Shards(shards / "train")
    items = [data.session(i % len(data)) for i in range(5)]  # (the fixture's 4 sessions, and a short one)
    items[1] = {k: v if k == "family" else v[:7] for k, v in items[4].items()}
    batch = collate(items, data.families)
    lengths = batch["valid"].sum(1)
    order = lengths.argsort(stable=True)
    parts = pieces(batch, 3)
    assert [w for _, w in parts] == [0.4, 0.4, 0.2]
    for (piece, _), rows in zip(parts, order.tensor_split(3)):
        assert piece["valid"].shape[1] == int(lengths[rows].max())  # cut to its own longest session
        assert torch.equal(piece["out"], batch["out"][rows, : piece["valid"].shape[1]])
    assert int(lengths.min()) == 7 and parts[0][0]["valid"].shape[1] < batch["valid"].shape[1]
    grads, out = [], []
    models = [InteractionModel(replace(_model_cfg(), layout=data.layout)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    zeros, full = torch.zeros, torch.full  # (torch's own, for the flow loss's noise below)
    monkeypatch.setattr(heads.torch, "randn", lambda shape, generator=None, device=None: zeros(shape, device=device))
    monkeypatch.setattr(heads.torch, "rand", lambda n, generator=None, device=None: full((n,), 0.5, device=device))
    for accum, model in zip((1, 3), models):
        c = TrainConfig(accum=accum)
        r, gnorm = train_step(model, model, optimizer(model, c, torch.device("cpu")), batch, c)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        out.append((r, gnorm))
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6, msg=k)
    (whole, g1), (split, g3) = out
    torch.testing.assert_close(split["loss"], whole["loss"].detach())
    torch.testing.assert_close(g3, g1)
    for k in ("text", "listen", "flow"):  # per session, in the pieces' order (by length)
        torch.testing.assert_close(split[k], whole[k].detach()[order])


def test_accum_is_at_most_the_batch():
    with pytest.raises(ValueError, match=r"--accum cuts each step's batch of 4 sessions into pieces: at most 4, got 5"):
        TrainConfig(batch=4, accum=5).check()
    with pytest.raises(ValueError, match=r"--accum must be >= 1, got 0"):
        TrainConfig(accum=0).check()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--accum", "2")])
def test_two_processes_with_gloo(shards, tmp_path, extra):
    """The torchrun path (DDP over gloo) on two CPU processes, whole and with --accum 2 (the first piece's backward
    under DDP's no_sync)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--no-python", str(Path(sys.executable).parent /
                        "microturn"), "train", "--preset", "cpu", "--data", str(shards / "train"), "--val",
                        str(shards / "val"), "--out", str(tmp_path / "ddp"), "--steps", "2", "--batch", "2",
                        "--warmup", "1", "--eval-every", "2", "--ckpt-every", "2", "--threads", "1", *extra],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert checkpoint.load(tmp_path / "ddp" / "model").checkpoint_info["step"] == 2
    ranks = torch.load(tmp_path / "ddp" / "train_state.pt", weights_only=False)["ranks"]
    assert len(ranks) == 2  # each rank's random state is kept


def test_fsdp_trains_as_ddp_does_and_resumes_exactly(shards, tmp_path):
    """--fsdp on two CPU processes (FSDP2 over gloo), a mixture of experts on sessions with and without video: the
    same weights as DDP (to float rounding), a checkpoint of whole tensors, an interrupted run that resumes
    bit-identical to an uninterrupted one, its state resumed without sharding, and DDP's with. (Before experts without
    tokens and the hMLP without frames got a zero gradient in training, a step where one rank used them and the
    other did not broke the sharded gradients' reduction.)"""
    torchrun = Path(sys.executable).parent / "torchrun"
    data = tmp_path / "data"
    shutil.copytree(shards / "train", data / "talk")
    write_shards(data / "rep", 1, seed=5, families=("repcount",), workers=1)

    def run(out, *extra):
        r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--no-python",
                            str(Path(sys.executable).parent / "microturn"), "train", "--preset", "cpu-moe", "--data",
                            str(data), "--val", str(shards / "val"), "--out", str(tmp_path / out), "--steps", "6",
                            "--batch", "1", "--warmup", "1", "--eval-every", "3", "--ckpt-every", "3", "--threads",
                            "1", *extra], env=os.environ | {"OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return checkpoint.load(tmp_path / out / "model").state_dict()

    def gap(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a)

    ddp = run("ddp", "--stop-at", "3")
    half = run("fsdp", "--fsdp", "--stop-at", "3")
    assert ddp.keys() == half.keys() and all(ddp[k].shape == half[k].shape for k in ddp)
    assert 0 < gap(ddp, half) < 1e-5  # sharded reductions add in another order
    assert torch.load(tmp_path / "fsdp" / "train_state.pt", weights_only=False)["opt_by_name"]
    shutil.copytree(tmp_path / "fsdp", tmp_path / "unsharded")
    resumed = run("fsdp", "--fsdp")
    whole = run("whole", "--fsdp")
    assert gap(resumed, whole) == 0
    assert gap(run("unsharded"), whole) < 1e-5  # a sharded run's state, resumed under DDP
    assert gap(run("ddp", "--fsdp"), whole) < 1e-5  # and a DDP run's, resumed sharded


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_augment_keeps_the_format(turns, seed):
    """Input augmentation: same shape and dtype, bins stay in range, silence stays silent (gain and warp never
    create sound from nothing), deterministic per seed, and it does change some sessions."""
    rng = np.random.default_rng(seed)
    audio = rng.integers(0, dmel.N_BINS, (turns, 2, 8, dmel.N_MELS)).astype(np.uint8)
    audio[:, :, :, :10] = 0
    a = augment(audio, np.random.default_rng(seed))
    assert a.shape == audio.shape and a.dtype == np.uint8 and a.max() < dmel.N_BINS
    assert np.array_equal(a, augment(audio, np.random.default_rng(seed)))
    assert not augment(np.zeros_like(audio), np.random.default_rng(seed)).any()


def test_warp_channels_is_a_speed_change_of_the_voice():
    """The vocal-tract warp of dMel bins matches what really happens to a voice's spectrum when its audio is played
    faster (formants and harmonics up by alpha) or slower: on real espeak-ng speech, the long-term spectrum of the
    warped bins lies much closer to that of the resampled audio than the unwarped bins do (and than the opposite
    warp); alpha 1 changes nothing."""
    from microturn.codecs.audio import resample
    from microturn.data.speech import Voice, synthesize

    audio = synthesize("The quick brown fox jumps over the lazy dog, then runs into the forest.",
                       Voice("espeak", "en-us", "m1")).audio
    bins = dmel.encode(audio).reshape(-1, dmel.N_MELS).astype(np.int16)
    assert np.array_equal(dmel.warp_channels(bins, 1.0), bins)

    def spectrum(b):  # mean level per channel over the voiced frames
        return b[b.max(-1) > 3].astype(float).mean(0)

    for alpha in (1.2, 0.9):
        faster = resample(audio, dmel.SAMPLE_RATE, round(dmel.SAMPLE_RATE / alpha))  # played at 16 kHz: x alpha
        real = spectrum(dmel.encode(faster).reshape(-1, dmel.N_MELS))
        err = lambda b: np.abs(spectrum(b) - real).mean()  # noqa: E731
        assert err(dmel.warp_channels(bins, alpha)) < 0.5 * err(bins)
        assert err(dmel.warp_channels(bins, alpha)) < 0.5 * err(dmel.warp_channels(bins, 1 / alpha))


def test_augment_alters_inputs():
    audio = np.random.default_rng(0).integers(1, dmel.N_BINS, (50, 2, 8, dmel.N_MELS)).astype(np.uint8)
    changed = [not np.array_equal(augment(audio, np.random.default_rng(s)), audio) for s in range(20)]
    assert sum(changed) >= 15


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32 - 1), st.floats(0.5, 4.0))
def test_equalise_colours_the_spectrum_and_keeps_the_format(turns, seed, depth):
    """The random equaliser: same shape and dtype, bins in range, silence stays silence, every sounding bin moves by
    at most the depth (rounded) and the same amount in every frame (a gain per channel, not noise), deterministic."""
    from microturn.train.data import equalise

    rng = np.random.default_rng(seed)
    audio = rng.integers(0, dmel.N_BINS, (turns, 2, 8, dmel.N_MELS)).astype(np.uint8)
    a = equalise(audio, np.random.default_rng(seed), depth)
    assert a.shape == audio.shape and a.dtype == np.uint8 and a.max() < dmel.N_BINS
    assert np.array_equal(a, equalise(audio, np.random.default_rng(seed), depth))
    assert not a[audio == 0].any()
    d = a.astype(int) - audio
    assert np.abs(d).max() <= round(depth + 0.5)
    mid = (audio >= 4) & (audio <= dmel.N_BINS - 5)  # unclipped: the gain of their channel, whatever the frame
    flat, ok = d.reshape(-1, dmel.N_MELS), mid.reshape(-1, dmel.N_MELS)
    for k in range(dmel.N_MELS):
        assert len(set(flat[ok[:, k], k].tolist())) <= 1


@pytest.mark.parametrize("option", [{"eq": 3.0}, {"band": 1.0}, {"band": 0.5}])
def test_eq_and_band_are_drawn_last_so_batches_without_them_stay_and_with_them_differ(shards, tmp_path, option):
    """--eq and --band draw after every other augmentation, so a run without them makes exactly the batches it made
    before the options existed, and with one only the audio changes (the clock, the sessions, the targets are the
    same). Out-of-range values are refused."""
    from microturn.train.data import Curriculum, Shards, StepBatches

    sh = Shards(shards / "train")
    make = lambda **o: StepBatches(sh, Curriculum(sh, 0), batch=4, steps=10, seed=5, rank=0, conversations=0.0,  # noqa: E731
                                   augment=True, max_len=400, **o)
    plain, coloured = make(), make(**option)
    differ = 0
    for step in range(6):
        a, b = plain[step], coloured[step]
        assert all(torch.equal(a[k], b[k]) for k in a if k != "audio")
        differ += not torch.equal(a["audio"], b["audio"])
    assert differ >= 2
    for bad in ({"eq": -1.0}, {"band": 1.5}, {"band": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            train(TrainConfig(data=str(shards / "train"), val="", steps=1, out=str(tmp_path / "a"), **bad), _model_cfg())


@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_band_limit_turns_the_channels_beyond_a_band_down_to_a_noise_floor_and_keeps_the_rest(turns, seed):
    """The random band: same shape and dtype, deterministic; the channels centred in 400-3000 Hz (inside every band
    drawn) are kept bin for bin; beyond the band a bin is turned down, or raised to the noise floor (at most its top)
    where it was quieter, never anything else."""
    from microturn.train.data import BAND_FLOOR, band_limit

    rng = np.random.default_rng(seed)
    audio = rng.integers(0, dmel.N_BINS, (turns, 2, 8, dmel.N_MELS)).astype(np.uint8)
    a = band_limit(audio, np.random.default_rng(seed))
    assert a.shape == audio.shape and a.dtype == np.uint8
    assert np.array_equal(a, band_limit(audio, np.random.default_rng(seed)))
    inside = (dmel.CHANNEL_HZ >= 400) & (dmel.CHANNEL_HZ <= 3000)
    assert np.array_equal(a[..., inside], audio[..., inside])
    assert ((a <= audio) | (a <= BAND_FLOOR[1])).all()


def test_band_limit_on_average_turns_the_top_and_bottom_channels_down():
    """Over many draws on loud input (level 15 everywhere) the channels fall off away from the band: the highest and
    the lowest channel far below the middle ones."""
    from microturn.train.data import band_limit

    loud = np.full((40, dmel.N_MELS), 15, np.uint8)
    mean = np.mean([band_limit(loud, np.random.default_rng(s)).mean(0) for s in range(300)], axis=0)
    assert (mean[(dmel.CHANNEL_HZ >= 400) & (dmel.CHANNEL_HZ <= 3000)] == 15).all()
    assert mean[-1] < 10 and mean[0] < 13
    assert (np.diff(mean[dmel.CHANNEL_HZ > 3000]) <= 0.05).all()  # down and down, to within the floor's dither


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (scripts/setup.sh installs it)")
def test_band_limit_floor_covers_a_real_telephone_band_recording(tmp_path):
    """Real espeak-ng speech through sox's 300-3400 Hz band, written as 16-bit audio as every set is: the channels
    far beyond the band hold the recording's rounding noise, whose levels lie within the floors ``band_limit`` draws
    (session 58; before, ``band_limit`` set them to level 0, which no recording holds)."""
    import soundfile as sf

    from microturn.data import speech
    from microturn.train.data import _WHITE, BAND_FLOOR

    wav = tmp_path / "a.wav"
    sf.write(wav, speech.synthesize("Say bingo whenever I say yellow.", speech.Voice("espeak", "en-us")).audio,
             16000, subtype="PCM_16")
    subprocess.run(["sox", "-V1", "-D", "-R", str(wav), "-b", "16", str(tmp_path / "b.wav"), "sinc", "300-3400"],
                   check=True)
    x, _ = sf.read(tmp_path / "b.wav", dtype="float32")
    bins = dmel.quantize(dmel.log_mel(x)).numpy().astype(float)
    far = dmel.CHANNEL_HZ > 4500
    floor = bins[:, far] - _WHITE[far]  # the floor each bin implies for the widest channel
    assert BAND_FLOOR[0] - 1 <= floor.min() and floor.max() <= BAND_FLOOR[1] + 1
    assert bins[:, (dmel.CHANNEL_HZ > 500) & (dmel.CHANNEL_HZ < 3000)].max() > bins[:, far].max() + 2  # speech there


def test_cue_report_scores_the_decisions(tmp_path):
    """scripts/cue_report.py on a model that writes its targets: it notes every cue-list word heard, right, and
    nothing else, and acts after every cue and after no other cue word; a model that never speaks scores none."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import cue_report

    from microturn.train.data import Shards

    write_shards(tmp_path, 6, seed=3, families=("cuespeak",), workers=1)
    V = default_tokenizer().vocab_size

    class Targets(torch.nn.Module):
        def forward(self, batch):
            return {"out_logits": torch.nn.functional.one_hot(batch["out"], V).float()}

    class Silent(torch.nn.Module):
        def forward(self, batch):
            return {"out_logits": torch.nn.functional.one_hot(torch.full_like(batch["out"], EOT), V).float()}

    got = cue_report.decisions(Targets(), Shards(tmp_path), 6)
    cues, others = got["response first after the cue"], got["response first after another cue word"]
    assert cues[1] >= 2 and others[1] >= 2 and cues[0] == cues[1] and others[0] == 0
    assert got["heard token first"] == got["heard word right"] == [cues[1] + others[1]] * 2
    assert got["heard token first elsewhere"][0] == 0 and got["heard token first elsewhere"][1] > 50
    silent = cue_report.decisions(Silent(), Shards(tmp_path), 6)
    assert all(n == got[k][1] for k, (hits, n) in silent.items())
    assert all(hits == 0 for k, (hits, n) in silent.items() if "mass" not in k)
    assert all(hits < 0.05 * n for k, (hits, n) in silent.items() if "mass" in k)  # near none: <eot> takes it
    made = got["response first, heard word made the cue"], got["response first, heard word made another"]
    assert made[0][1] == made[1][1] == cues[1] + others[1]

    bingo = default_tokenizer().encode_word("bingo")[0]

    class Reader(torch.nn.Module):  # says "bingo" after a heard word it noted before (only the cue is noted)
        def forward(self, batch):
            out = batch["out"][0]
            logits = torch.nn.functional.one_hot(torch.full_like(batch["out"], EOT), V).float()
            for t in range(len(out)):
                if is_heard(out[t, 0]) and (out[:t, 1][out[:t, 0] == NOTE] == out[t, 0]).any():
                    logits[0, t, 1, bingo] = 10.0
            return {"out_logits": logits}

    read = cue_report.decisions(Reader(), Shards(tmp_path), 6)
    assert read["response first, heard word made the cue"] == [made[0][1]] * 2
    assert read["response first, heard word made another"] == [0, made[1][1]]
    mass = read["response mass, heard word made the cue"][0], read["response mass, heard word made another"][0]
    assert mass[0] > 2 * mass[1]  # the mass follows the swap only for a model that reads the heard word
    assert got["response mass, heard word made the cue"] == got["response mass, heard word made another"]


def test_drop_sessions_takes_a_family_out_of_the_shards(shards, tmp_path):
    """scripts/drop_sessions.py: the reader no longer sees the family's sessions, the others read back as before, the
    old list is kept, a later drop of another family keeps its own, and a drop that would overwrite a backup is
    refused."""

    root = tmp_path / "train"
    shutil.copytree(shards / "train", root)
    before = Shards(root)
    turns = {before.info(k)["id"]: before.session(k)["out"] for k in range(len(before))
             if before.info(k)["family"] == "turn"}
    script = [sys.executable, str(Path(__file__).parents[1] / "scripts" / "drop_sessions.py"), str(root)]
    subprocess.run(script + ["--families", "cuespeak"], check=True, capture_output=True)
    after = Shards(root)
    assert after.families == ["turn"] and len(after) == len(turns)
    assert all(np.array_equal(after.session(k)["out"], turns[after.info(k)["id"]]) for k in range(len(after)))
    backups = list(root.glob("**/sessions.before-drop-cuespeak.json"))
    assert backups
    subprocess.run(script + ["--families", "turn"], check=True, capture_output=True)
    assert len(Shards(root)) == 0 and list(root.glob("**/sessions.before-drop-turn.json"))
    for b in backups:  # restored, then dropped again: its backup would be overwritten
        (b.parent / "sessions.json").write_text(b.read_text())
    again = subprocess.run(script + ["--families", "cuespeak"], capture_output=True, text=True)
    assert again.returncode != 0 and "dropped from before" in again.stderr


@pytest.mark.parametrize("listen_ends", [None, 0.025])
def test_relayout_shards_moves_ids_and_renders_the_changed_family_again(tmp_path, listen_ends):
    """scripts/relayout_shards.py on shards made to look written with 5 fewer specials and older cue targets:
    the BPE ids move up, the cue sessions' out tokens and agent mel are rendered again (the other families' left
    as they are), the result is today's shards; a reader refuses shards left half done, and a session whose user
    audio no longer renders the same stops the script. Shards labelled at the words' ends keep their labelling."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import relayout_shards

    from microturn.stream.tokenizer import SPECIALS
    from microturn.train.data import Shards

    write_shards(tmp_path / "now", 2, seed=5, families=("cuespeak", "turn"), workers=1, listen_ends=listen_ends)
    d = next((tmp_path / "now").glob("**/sessions.json")).parent
    want = {k: np.load(d / f"{k}.npy") for k in ("out", "mel", "text_in", "listen", "audio")}
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "now", old)
    od = old / d.relative_to(tmp_path / "now")
    meta = json.loads((od / "sessions.json").read_text())
    cue = [s for s in meta["sessions"] if s["family"] == "cuespeak"]
    mel, out = np.load(od / "mel.npy", mmap_mode="r+"), np.load(od / "out.npy", mmap_mode="r+")
    for s in cue:  # older targets: no heard tokens, another agent track
        mel[s["start"]: s["start"] + s["length"]] = 0
        for t in range(s["start"], s["start"] + s["length"]):
            if is_heard(out[t, 0]):
                out[t] = np.append(out[t, 1:], 0)
            if out[t, 0] == NOTE and is_heard(out[t, 1]):  # the cue noted as a word
                out[t, 1] = default_tokenizer().encode_word(CUE_WORDS[out[t, 1] - HEARD])[0]
    assert not is_heard(out).any() and is_heard(want["out"]).sum() >= 2
    mel.flush()
    out.flush()
    for k in ("out", "text_in", "listen"):
        arr = np.load(od / f"{k}.npy", mmap_mode="r+")
        arr[arr >= len(SPECIALS)] -= 5
        arr.flush()
    (od / "sessions.json").write_text(json.dumps(meta | {"specials": len(SPECIALS) - 5}))
    with pytest.raises(ValueError, match="special tokens"):
        Shards(old)
    half = tmp_path / "half"
    shutil.copytree(old, half)
    hd = half / d.relative_to(tmp_path / "now")
    audio = np.load(hd / "audio.npy", mmap_mode="r+")
    audio[cue[0]["start"]] ^= 1
    audio.flush()
    with pytest.raises(SystemExit, match="other user audio"):
        relayout_shards.update(hd, 7, {"cuespeak"}, workers=1)
    with pytest.raises(ValueError, match="not yet rendered again"):
        Shards(half)

    assert "2 cuespeak sessions" in relayout_shards.update(od, 7, {"cuespeak"}, workers=1)
    for k, v in want.items():
        assert np.array_equal(np.load(od / f"{k}.npy"), v), k
    assert json.loads((od / "sessions.json").read_text()) == json.loads((d / "sessions.json").read_text())
    assert relayout_shards.update(od, 7, {"cuespeak"}, workers=1) == "up to date"
    assert len(Shards(old)) == 4


def test_listening_report_scores_heard_and_asked_number_words(tmp_path):
    """scripts/listening_report.py on spoken delegate sessions: each number word is scored once at its end by the
    listening head, and once as the out slots write it inside the delegation (``asked``), as many as the shards hold;
    a model whose heads both give the right token scores them all. By kind, and by where they end (``--by-end``: the
    sessions generated again for their words' times), the same words are scored, each once."""
    from microturn.data import language as lang
    from microturn.stream.tokenizer import DLG, DLG_END, TYPED
    from microturn.train.data import Shards

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import listening_report as LR

    write_shards(tmp_path / "dlg", 3, seed=5, families=("delegate",), workers=1, typed=0.0)
    sh = Shards(tmp_path / "dlg")
    tok = default_tokenizer()
    numbers = {tok.encode_word(w)[0] for w in lang.NUMBER_WORDS}
    want = 0
    for i in range(len(sh)):
        item = sh.session(i)
        assert not (item["text_in"] == TYPED).any()  # typed=0: every question is spoken
        inside = False
        for g in item["out"].flatten().tolist():
            inside = (inside or g == DLG) and g != DLG_END
            want += inside and g in numbers

    class Oracle(InteractionModel):  # the right token from both heads: the session's own, whatever was written
        truth = {}  # the listening targets' bytes -> the session's out tokens

        def forward(self, batch, early_listen=0, **kw):
            V = self.cfg.vocab_size
            listen = torch.nn.functional.one_hot(batch["listen"], V).float()
            out = self.truth[batch["listen"].numpy().tobytes()]
            return {"listen_logits": listen, "listen_early_logits": listen,
                    "out_logits": torch.nn.functional.one_hot(out, V).float()}

    for i in range(len(sh)):
        b = collate([sh.session(i)], sh.families)
        Oracle.truth[b["listen"].numpy().tobytes()] = b["out"]
    torch.manual_seed(0)
    for model, perfect in ((InteractionModel(_model_cfg()).eval(), False), (Oracle(_model_cfg()).eval(), True)):
        st = LR.report(model, sh, 3, 1, ("delegate",), split="train")
        hit, n = st["asked", "number word"]
        assert n == want > 0 and st["last block", "number word"][1] >= n
        heard = st["last block", "number word"]
        assert (hit == n) == perfect and (heard[0] == heard[1]) == perfect
        kinds = [st["last block", f"number {k}"] for k in ("0-9, 100", "10-19", "20-90")]  # the same words, by kind
        assert [sum(x) for x in zip(*kinds)] == heard
        for k, cell in zip(("0-9, 100", "10-19", "20-90"), kinds):  # and again by where each ends (--by-end)
            ends = [v for (block, kind), v in st.items() if block.startswith("ends ") and kind == f"number {k}"]
            assert len(ends) == len(LR.END_BINS) - 1 and [sum(x) for x in zip(*ends)] == cell
        for how in ("teacher-forced", "free-running"):  # every session has one question, right only for the oracle
            hit, n = st["question", how]
            assert n == len(sh) and (hit == n) == perfect and (hit == 0) != perfect

    # shards labelled at the words' ends too (--listen-ends): each number word scored once, at the token it ends in
    write_shards(tmp_path / "ends", 3, seed=5, families=("delegate",), workers=1, typed=0.0, listen_ends=0.0)
    sh = Shards(tmp_path / "ends")
    for i in range(len(sh)):
        b = collate([sh.session(i)], sh.families)
        Oracle.truth[b["listen"].numpy().tobytes()] = b["out"]
    st = LR.report(Oracle(_model_cfg()).eval(), sh, 3, 1, ("delegate",), split="train", ends=0.0)
    for k in ("0-9, 100", "10-19", "20-90"):
        ends = [v for (block, kind), v in st.items() if block.startswith("ends ") and kind == f"number {k}"]
        assert [sum(x) for x in zip(*ends)] == st["last block", f"number {k}"] and all(h == n for h, n in ends)
    assert st["last block", "number word"][1] > 0
    plain, old = {}, Shards(tmp_path / "dlg")  # a head that names the words where they were labelled before
    for i in range(len(sh)):  # (the "dlg" shards: the same sessions)
        plain[collate([sh.session(i)], sh.families)["listen"].numpy().tobytes()] = \
            collate([old.session(i)], sh.families)["listen"]

    class Plain(Oracle):
        def forward(self, batch, early_listen=0, **kw):
            listen = torch.nn.functional.one_hot(plain[batch["listen"].numpy().tobytes()], self.cfg.vocab_size)
            return super().forward(batch) | {"listen_logits": listen.float()}

    st = LR.report(Plain(_model_cfg()).eval(), sh, 3, 1, ("delegate",), split="train", ends=0.0)
    before, after = ([st[LR.end_bin(k), f"number {c}"] for k in ks for c in ("0-9, 100", "10-19", "20-90")]
                     for ks in ((0, 1), (2, 3)))  # words ending before their last middle token's end, and after
    assert all(h == n for h, n in before) and all(h == 0 for h, n in after) and sum(n for h, n in after) > 0

    # labelled at a word's end only where it reaches 25 ms into that token (--listen-ends 0.025): the old labels are
    # right up to 25 ms past the last middle token's end (scored there) and wrong beyond (scored at the next token)
    write_shards(tmp_path / "ends25", 3, seed=5, families=("delegate",), workers=1, typed=0.0, listen_ends=0.025)
    sh = Shards(tmp_path / "ends25")
    for i in range(len(sh)):
        b = collate([sh.session(i)], sh.families)
        Oracle.truth[b["listen"].numpy().tobytes()] = b["out"]
        plain[b["listen"].numpy().tobytes()] = collate([old.session(i)], sh.families)["listen"]
    st = LR.report(Plain(_model_cfg()).eval(), sh, 3, 1, ("delegate",), split="train", ends=0.025)
    before, after = ([st[LR.end_bin(k), f"number {c}"] for k in ks for c in ("0-9, 100", "10-19", "20-90")]
                     for ks in ((0, 1, 2), (3,)))
    assert all(h == n for h, n in before) and all(h == 0 for h, n in after) and sum(n for h, n in after) > 0
    assert sum(n for h, n in before[6:]) > 0  # words ending 0-25 ms into the next token, scored a token before
    for k in ("0-9, 100", "10-19", "20-90"):  # each number word scored once, at the token it is labelled at
        ends = [v for (block, kind), v in st.items() if block.startswith("ends ") and kind == f"number {k}"]
        assert sum(n for h, n in ends) == st["last block", f"number {k}"][1]


def test_voices_report_hears_through_a_shelf_or_a_warp():
    """scripts/voices_report.py --shelf / --warp: the upper half of the channels moves by the shelf, the lower half
    and silence stay; a warp of 1 and a shelf of 0 change nothing; the other keys of the session are untouched."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from voices_report import hear_through

    audio = np.random.default_rng(0).integers(0, dmel.N_BINS, (5, 2, 8, dmel.N_MELS)).astype(np.uint8)
    item = {"audio": audio, "out": np.zeros(3)}
    assert np.array_equal(hear_through(item)["audio"], audio) and hear_through(item)["out"] is item["out"]
    up = hear_through(item, shelf=1)["audio"].astype(int)
    low, high = slice(0, dmel.N_MELS // 2), slice(dmel.N_MELS // 2, None)
    assert np.array_equal(up[..., low], audio[..., low])
    assert np.array_equal(up[..., high], np.where(audio[..., high] > 0,
                                                  np.minimum(audio[..., high].astype(int) + 1, dmel.N_BINS - 1), 0))
    assert np.array_equal(hear_through(item, warp=1.2)["audio"], dmel.warp_channels(audio.astype(np.int16), 1.2))
    whole = hear_through(item, shelf=-1, shelf_from=0)["audio"].astype(int)  # a gain over every channel
    assert np.array_equal(whole, np.where(audio > 0, np.maximum(audio.astype(int) - 1, 0), 0))


def test_curves_of_a_run_without_held_out_data_show_only_its_training_losses(tmp_path):
    """A run with --val "" (scripts/train_gpu.sh) logs no evaluations: one panel, not three empty ones."""
    import matplotlib.image
    train_rows = [{"kind": "train", "step": s, "text": 1 / s, "listen": 2 / s, "flow": 0.8} for s in (1, 2, 3)]
    ev = {"kind": "eval", "step": 3, "text": 0.5, "listen": 1.0, "flow": 0.8, "listen_acc": 0.3,
          "listen_acc_task": 0.2, "listen_acc_task_by_engine": {"espeak": 0.25}, "news_acc_by_family": {"turn": 0.5}}
    widths = []
    for name, rows in (("alone", train_rows), ("evals", train_rows + [ev])):
        log = tmp_path / f"{name}.jsonl"
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        plot_curves(log, tmp_path / f"{name}.png")
        widths.append(matplotlib.image.imread(tmp_path / f"{name}.png").shape[1])
    assert widths[0] * 3 < widths[1]


def test_train_throughput_counts_every_matrix_product_and_the_attention(shards, tmp_path):
    """benchmarks/train_throughput.py: FLOPs per token are at least 6 per weight of the blocks (2 forward, 4
    backward) and include the CPU attention kernel (torch counts only the GPU ones itself); MFU is the model FLOPs
    per second over the peak given; a device name finds its datasheet peak (L40S is not an L4)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import train_throughput as tt

    out = tmp_path / "tt.json"
    tt.main(["--data", str(shards / "train"), "--presets", "cpu", "--batch", "2", "--warmup", "0", "--steps", "1",
             "--peak-tflops", "0.5", "--json", str(out)])
    (r,) = json.loads(out.read_text())["rows"]
    model = InteractionModel(preset("cpu", vocab_size=default_tokenizer().vocab_size))
    block_weights = sum(p.numel() for p in model.transformer.blocks.parameters() if p.ndim == 2)
    assert r["flops_per_token"] > 6 * block_weights
    assert r["tokens_per_s"] > 0 and 0 <= r["padding"] < 1
    assert r["mfu"] == pytest.approx(r["model_tflops"] / 0.5)
    assert out.with_suffix(".png").stat().st_size > 0
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 4, 16, 64, requires_grad=True)
    k, v = torch.randn(1, 2, 16, 64), torch.randn(1, 2, 16, 64)
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).sum().backward()
    # forward: two products (scores, then values); backward: five (it computes the scores again, as flash kernels do)
    assert fc.get_total_flops() == 7 * (2 * 4 * 16 * 16 * 64)
    assert [tt.gpu_peak(f"NVIDIA {n}") for n in ("H100 80GB HBM3", "H100 PCIe", "L40S", "H200", "A10G", "GH200 480GB",
                                                 "Some GPU")] == [989.4, 756.0, 362.1, 989.4, None, 989.4, None]


def test_the_bundled_models_recipe_parses_with_todays_cli(tmp_path):
    """scripts/train_bundled.sh (the README's and docs/training.md's way to train the bundled model) run with commands that only parse
    their options with microturn's CLI (train, synth, model bundle, results; torchrun's command after --no-python)
    and check that the scripts it calls exist: a renamed or removed option fails here, not hours into a rerun."""
    root = Path(__file__).parents[1]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train_bundled.sh").write_text((root / "scripts" / "train_bundled.sh").read_text())
    log = tmp_path / "commands.log"
    parse = ("import sys, pathlib; from microturn.cli import build_parser; a = build_parser().parse_args(sys.argv[1:]); "
             "sys.argv[1] == 'synth' and pathlib.Path(a.out).mkdir(parents=True, exist_ok=True)")  # for its .done
    tools = {"mt": f'echo "microturn $*" >> {log}; exec {sys.executable} -c "{parse}" "$@"',
             "torchrun": 'while [ "$1" != --no-python ]; do shift; done; shift; exec "$@"',
             "py": f'[ "$1" = -c ] && exec {sys.executable} "$@"; echo "python $*" >> {log}; test -f {root}/"$1"'}
    for name, body in tools.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    env = os.environ | {"MT": str(tmp_path / "mt"), "PY": str(tmp_path / "py"), "TORCHRUN": str(tmp_path / "torchrun")}
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "train_bundled.sh")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = log.read_text().splitlines()
    kinds = [" ".join(line.split()[:2]) for line in lines]
    script = (root / "scripts" / "train_bundled.sh").read_text()
    runs = script.count("$mt train") - 1 + len(re.findall(r"^train runs/", script, re.M))  # less train()'s own
    assert kinds.count("microturn train") == runs and kinds.count("microturn synth") >= 60, kinds
    assert "python scripts/drop_sessions.py" in " ".join(lines)
    assert lines[-1] == "microturn results --scenarios sets/test"


def test_listen_probe_trains_the_listening_alone(tmp_path):
    """scripts/listen_probe.py: trained on the listening loss alone, a model's listening loss falls and its head
    names more of the words of the sessions it trains on than at step 0; only the weights it is given change."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import listen_probe

    write_shards(tmp_path / "s", 2, seed=3, families=("cuespeak",), workers=1, typed=0.0)
    sh = Shards(tmp_path / "s")
    torch.manual_seed(0)
    model = InteractionModel(_model_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    losses, scores = listen_probe.probe(model, sh, {"s": sh}, steps=40, every=40, batch=2, lr=3e-3,
                                        families=("cuespeak",), sessions=2, log=lines.append)
    assert sorted(scores) == [0, 40] and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    right = {s: sum(h for h, _ in scores[s]["s"].values()) for s in scores}
    assert sum(n for _, n in scores[0]["s"].values()) > 0 and right[40] > right[0], scores
    assert any(line.startswith("step 40  s: ") for line in lines)
    assert not torch.equal(before["listen.weight"], model.state_dict()["listen.weight"])


def test_translate_report_counts_each_word_heard_and_said_by_voice(tmp_path):
    """scripts/translate_report.py: every English word of the translate sessions is counted once, under its voice,
    as heard (the listening head at its last labelled token) and said (the out slot of its Spanish word): a model
    whose heads give the targets has heard and said them all; one that hears nothing but writes the targets has said
    them all and heard none."""
    from microturn.data import language as lang
    from microturn.data.speech import Voice
    from microturn.stream.tokenizer import SIL

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import translate_report as TR

    write_shards(tmp_path / "tr", 3, seed=2, families=("translate", "turn"), workers=1)
    sh = Shards(tmp_path / "tr")
    tok = default_tokenizer()
    spanish = {tok.encode_word(s)[0] for s in lang.SPANISH.values()}
    want = sum(int(np.isin(sh.session(i)["out"], list(spanish)).sum()) for i in range(len(sh))
               if sh.info(i)["family"] == "translate")

    class Heads(InteractionModel):
        deaf = False

        def forward(self, batch, **kw):
            V = self.cfg.vocab_size
            listen = torch.full_like(batch["listen"], SIL) if self.deaf else batch["listen"]
            return {"listen_logits": torch.nn.functional.one_hot(listen, V).float(),
                    "out_logits": torch.nn.functional.one_hot(batch["out"], V).float()}

    model = Heads(_model_cfg()).eval()
    got = TR.report(model, sh, 10)
    assert want > 0 and sum(got.values()) == want
    assert set(got) <= {(v, True, True) for v, _, _ in got}
    Heads.deaf = True
    got = TR.report(model, sh, 10)
    assert sum(got.values()) == want and all(not h and s for (_, h, s) in got)
    kinds = {Voice.from_id(sh.info(i)["voice"]).kind for i in range(len(sh)) if sh.info(i)["family"] == "translate"}
    assert {v for v, _, _ in got} == kinds and all(k in TR.table(got) for k in kinds)
