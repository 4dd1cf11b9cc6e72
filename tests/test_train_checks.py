"""`microturn train` refuses what it cannot use, in one line naming the option or the file, before anything is
written: bad options, a resume that would change the model, a broken train_state.pt, broken shards; a step whose
loss is not finite stops the run with its last good checkpoint kept."""
import dataclasses
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from microturn.cli import main
from microturn.data.shards import write_shards
from microturn.model import checkpoint
from microturn.model.config import ModelConfig
from microturn.stream.tokenizer import default_tokenizer
from microturn.train import loop
from microturn.train.config import TrainConfig
from microturn.train.data import Shards
from microturn.train.loop import train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards") / "train"
    write_shards(d, 1, seed=0, families=("turn", "cuespeak"), workers=1)
    return d


def _model_cfg(**kw):
    return ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32, **kw)


def _config(shards, out, **kw):
    return TrainConfig(**dict(data=str(shards), val=None, out=str(out), steps=2, batch=1, warmup=1, ckpt_every=1,
                              threads=1) | kw)


FLOATS = [f.name for f in dataclasses.fields(TrainConfig) if isinstance(f.default, float)]
BAD = [dict(steps=0), dict(steps=-1), dict(stop_at=-3), dict(ckpt_every=0), dict(eval_every=0), dict(batch=0),
       dict(batch=-2), dict(eval_batches=0), dict(warmup=-1), dict(seed=-1), dict(workers=-1), dict(threads=-1),
       dict(bucket=0), dict(audio_conv=-1), dict(early_listen=-1), dict(clip=0.0), dict(lr=-1e-3),
       dict(min_lr=-1.0), dict(speak_weight=-1.0), dict(listen_scale=-0.5), dict(task_listen=0.0),
       dict(added_lr=0.0), dict(eq=99.0),
       dict(openings=1.5), dict(mix="turn=inf"), dict(mix="turn=nan"), dict(mix="turn"), dict(preset="nope"),
       dict(data=""), dict(out="")] + [{name: v} for name in FLOATS for v in (float("nan"), float("inf"))]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_a_bad_option_is_refused_by_name_before_anything_is_written(shards, tmp_path, bad):
    flag = "--" + next(iter(bad)).replace("_", "-")
    c = replace(_config(shards, tmp_path / "run"), **bad)
    with pytest.raises(ValueError, match=re.escape(flag)):
        train(c, _model_cfg())
    assert not (tmp_path / "run").exists()


def test_the_cli_says_a_bad_option_in_one_line(shards, tmp_path, capsys):
    rc = main(["train", "--data", str(shards), "--val", "", "--out", str(tmp_path / "run"), "--steps", "2",
               "--ckpt-every", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "microturn train: error: --ckpt-every (ckpt_every) must be >= 1, got 0"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("poison", ["loss", "grad_norm"])
def test_a_step_whose_loss_is_not_finite_stops_the_run_keeping_the_last_checkpoint(shards, tmp_path, monkeypatch,
                                                                                   poison):
    """Step 3 turns the weights to NaN and its loss (or gradient norm) with them: the run stops naming step 3, and
    the checkpoint of step 2 is still the one on disk, whole."""
    real, calls = loop.train_step, []

    def train_step(net, model, opt, batch, c, listen_weight=None):
        r, gnorm = real(net, model, opt, batch, c, listen_weight)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
            if poison == "loss":
                r = r | {"loss": torch.tensor(float("nan"))}
            else:
                gnorm = torch.tensor(float("inf"))
        return r, gnorm

    monkeypatch.setattr(loop, "train_step", train_step)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"step 3: the training loss .* checkpoint of step 2 .* is kept"):
        train(_config(shards, out, steps=5), _model_cfg())
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] == 2 and all(torch.isfinite(v).all() for v in st["model"].values())
    m = checkpoint.load(out / "model")
    assert m.checkpoint_info["step"] == 2 and all(torch.isfinite(p).all() for p in m.parameters())
    assert len(calls) == 3


def test_resuming_with_options_that_change_the_model_is_refused(shards, tmp_path):
    """A run of preset cpu, stopped at step 1, is not resumed as a cpu-moe run (nor with another front-end, hear-back
    or --init); its record keeps its options; the schedule may change (a new --steps stretches it), and the record
    says what changed when."""
    out = tmp_path / "run"
    c = _config(shards, out, stop_at=1)
    train(c)  # the preset's model
    record = (out / "train_config.json").read_text()
    assert json.loads(record)["preset"] == "cpu"
    for bad, said in [(dict(preset="cpu-moe"), "--preset 'cpu' (now 'cpu-moe')"),
                      (dict(hear_back=True), "--hear-back (hear_back) False (now True)"),
                      (dict(audio_conv=2), "--audio-conv (audio_conv) 0 (now 2)"),
                      (dict(init=str(out / "model")), "--init '' (now ")]:
        with pytest.raises(ValueError, match=re.escape(said)):
            train(replace(c, **bad))
        assert (out / "train_config.json").read_text() == record
    with pytest.raises(ValueError, match="another model"):  # a model given in Python, not the run's
        train(c, _model_cfg())
    assert torch.load(out / "train_state.pt", weights_only=False)["step"] == 1
    train(replace(c, stop_at=0, steps=3))
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 3 and saved["preset"] == "cpu"
    read = Shards(c.data)  # what the run read is recorded: its sessions, folders and families
    assert saved["data_read"] == read.summary() and saved["data_read"]["sessions"] == len(read) > 0
    assert sum(read.summary()["by_family"].values()) == len(read) and set(read.summary()["by_family"]) == {
        "turn", "cuespeak"} and read.summary()["folders"] == len(read.shards)
    assert saved["resumed"] == [{"step": 1, "changed": {"steps": [2, 3], "stop_at": [1, 0]}}]
    assert checkpoint.load(out / "model").checkpoint_info["step"] == 3


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a state"])
def test_a_broken_train_state_is_named_with_what_to_do(shards, tmp_path, damage):
    out = tmp_path / "run"
    c = _config(shards, out, stop_at=1)
    train(c, _model_cfg())
    state = out / "train_state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"\0" * 100)
    else:
        torch.save({"step": 1}, state)
    with pytest.raises(ValueError, match=re.escape(str(state)) + ".*delete it to start the run over"):
        train(replace(c, stop_at=0), _model_cfg())


def _damaged(shards, tmp_path, how):
    d = tmp_path / "shards"
    shutil.copytree(shards, d)
    part = next(p.parent for p in d.glob("**/sessions.json"))
    if how == "sessions.json malformed":
        (part / "sessions.json").write_text('{"layout":\n')
    elif how == "sessions.json without sessions":
        meta = json.loads((part / "sessions.json").read_text())
        (part / "sessions.json").write_text(json.dumps({"layout": meta["layout"]}))
    elif how == "session without its length":
        meta = json.loads((part / "sessions.json").read_text())
        del meta["sessions"][0]["length"]
        (part / "sessions.json").write_text(json.dumps(meta))
    elif how == "audio.npy missing":
        (part / "audio.npy").unlink()
    elif how == "out.npy truncated":
        f = part / "out.npy"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "out.npy garbage":
        (part / "out.npy").write_bytes(b"not an array")
    elif how == "listen.npy short":
        listen = np.load(part / "listen.npy")
        np.save(part / "listen.npy", listen[: len(listen) // 2])
    return d, part


SHARD_DAMAGE = {"sessions.json malformed": "sessions.json", "sessions.json without sessions": "sessions.json",
                "session without its length": "sessions.json", "audio.npy missing": "audio.npy",
                "out.npy truncated": "out.npy", "out.npy garbage": "out.npy", "listen.npy short": "listen.npy"}


@pytest.mark.parametrize("how", list(SHARD_DAMAGE))
def test_broken_shards_are_named_when_opened(shards, tmp_path, how):
    d, part = _damaged(shards, tmp_path, how)
    with pytest.raises(ValueError, match=re.escape(str(part)) + ".*" + re.escape(SHARD_DAMAGE[how])):
        Shards(d)


def test_the_cli_names_a_broken_shard_before_training(shards, tmp_path, capsys):
    d, part = _damaged(shards, tmp_path, "audio.npy missing")
    rc = main(["train", "--data", str(d), "--val", "", "--out", str(tmp_path / "run"), "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{part}: audio.npy is missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
