"""The command line refuses bad input in one line (exit status 2) before it runs anything long, and never replaces
what it should not: a checkpoint written over itself, a folder of the user's, a report lost after the run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from microturn.cli import main
from microturn.data import synth
from microturn.data.synth import parse_difficulty, partial, prepare_out, replace_out
from microturn.model import checkpoint
from microturn.model.config import ModelConfig
from microturn.model.model import InteractionModel, Sampling
from microturn.stream.tokenizer import default_tokenizer


@pytest.fixture(scope="module")
def scenario_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "set"
    assert main(["synth", "--out", str(out), "--per-family", "1", "--families", "turn", "--seed", "3"]) == 0
    return str(out)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny float32 checkpoint."""
    torch.manual_seed(0)
    m = InteractionModel(ModelConfig(depth=2, vocab_size=default_tokenizer().vocab_size, flow_width=32))
    return str(checkpoint.save(m, tmp_path_factory.mktemp("cli") / "model"))


def refused(capsys, argv: list[str], *needles: str) -> str:
    """``microturn ARGV`` exits 2 with one line naming the problem."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert err.startswith(f"microturn {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("extra,needle", [
    (["--agent", "oracle", "--checkpoint", "x"], "--checkpoint applies to --agent model or harness, not oracle"),
    (["--agent", "silent", "--speak-threshold", "0.4"], "--speak-threshold applies to --agent model"),
    (["--agent", "model", "--harness", "pipecat"], "--harness applies to --agent harness"),
    (["--agent", "oracle", "--url", "ws://127.0.0.1:9/v1/stream"], "--url applies to --agent remote"),
    (["--agent", "remote", "--url", "http://127.0.0.1:9/v1/stream"], "ws:// or wss://"),
    (["--agent", "remote", "--url", "ws://127.0.0.1:1/v1/stream"], "unreachable"),  # nothing listens on port 1
])
def test_bench_options_that_do_not_apply_or_fail_are_one_line(capsys, scenario_set, extra, needle):
    refused(capsys, ["bench", "--scenarios", scenario_set, *extra], needle)


def test_bench_checks_its_report_path_before_the_run(capsys, scenario_set, tmp_path):
    refused(capsys, ["bench", "--scenarios", scenario_set, "--agent", "oracle", "--json", str(tmp_path)],
            "cannot write the report")
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["bench", "--scenarios", scenario_set, "--agent", "oracle", "--json",
                     str(tmp_path / "afile" / "r.json")], "afile")  # the folder is a file: said before the run
    for flag in ("--export-fdb", "--pictures"):  # folders the run writes after it: a file there is said before it
        refused(capsys, ["bench", "--scenarios", scenario_set, "--agent", "oracle", flag, str(tmp_path / "afile")],
                f"{flag} {tmp_path / 'afile'} is a file")


def test_bench_families_are_trimmed(capsys, scenario_set, tmp_path):
    assert main(["bench", "--scenarios", scenario_set, "--agent", "silent", "--families", " turn ,",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert list(json.loads((tmp_path / "r.json").read_text())["families"]) == ["turn"]
    # the spec's report: the JSON, the table, and timelines of a few scenarios beside the JSON unless told otherwise
    n = len(json.loads((tmp_path / "r.json").read_text())["scenarios"])
    assert sorted(p.suffix for p in (tmp_path / "r_pictures").iterdir()) == [".png"] * min(n, 4)
    assert main(["bench", "--scenarios", scenario_set, "--agent", "silent", "--families", "turn",
                 "--json", str(tmp_path / "q.json"), "--n-pictures", "0"]) == 0
    assert not (tmp_path / "q_pictures").exists()


def test_checkpoints_are_not_written_over_themselves_or_bundled_broken(capsys, ckpt, tmp_path):
    weights = (Path(ckpt) / "model.safetensors").read_bytes()
    refused(capsys, ["model", "grow", ckpt, "--depth", "3", "--out", ckpt], "itself")
    refused(capsys, ["model", "bundle", ckpt, "--out", ckpt], "itself", "precision")
    refused(capsys, ["model", "bundle", ckpt + "/model.safetensors", "--out", ckpt], "itself")
    refused(capsys, ["model", "bundle", ckpt, "--out", str(tmp_path / "b"), "--speak-threshold", "2"], "speak")
    refused(capsys, ["model", "bundle", ckpt, "--out", str(tmp_path / "b"), "--doubt-floor", "1"], "doubt_floor")
    assert (Path(ckpt) / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "b").exists()
    # a bundled (float16) model may be bundled again in place, to change its settings
    assert main(["model", "bundle", ckpt, "--out", str(tmp_path / "b")]) == 0
    assert main(["model", "bundle", str(tmp_path / "b"), "--out", str(tmp_path / "b"), "--speak-threshold", "0.4"]) == 0
    assert main(["model", "bundle", str(tmp_path / "b"), "--out", str(tmp_path / "b"), "--doubt-floor", "0.3"]) == 0
    assert Sampling.of(checkpoint.load(tmp_path / "b")) == Sampling(speak_threshold=0.4, doubt_floor=0.3)
    m = checkpoint.load(ckpt)
    with torch.no_grad():
        next(m.parameters())[0] = math.nan
    checkpoint.save(m, tmp_path / "nan")
    refused(capsys, ["model", "bundle", str(tmp_path / "nan"), "--out", str(tmp_path / "c")], "NaN")
    assert not (tmp_path / "c").exists()


def test_other_bad_paths_and_numbers_are_one_line(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["tokenizer", "--out", str(tmp_path)], "is a folder")
    refused(capsys, ["synth", "--out", str(tmp_path / "afile"), "--per-family", "1"], "is a file")
    refused(capsys, ["synth", "--out", str(tmp_path / "s"), "--shards", "--difficulty", "0.5"], "--difficulty")
    refused(capsys, ["perf", "--threads", "-1", "--json", str(tmp_path / "p.json")], "threads")
    refused(capsys, ["serve", "--checkpoint", str(tmp_path / "none")], "none")
    for argv, needle in ((["--port", "99999"], "--port"), (["--max-sessions", "0"], "--max-sessions"),
                         (["--idle-timeout", "-1"], "--idle-timeout"), (["--gather-ms", "nan"], "--gather-ms"),
                         (["--threads", "-2"], "--threads")):
        with pytest.raises(SystemExit) as e:
            main(["serve", *argv])
        assert e.value.code == 2 and needle in capsys.readouterr().err


def test_difficulty_is_parsed_with_its_bounds():
    assert parse_difficulty("0.3,1") == (0.3, 1.0) and parse_difficulty("0,0") == (0.0, 0.0)
    for bad in ("1", "0.5,0.2", "-0.1,1", "0,1.5", "a,b", "0,1,2", ""):
        with pytest.raises(ValueError, match="--difficulty"):
            parse_difficulty(bad)


def test_synth_replaces_only_what_it_wrote(tmp_path):
    """A folder of the same kind is replaced whole (nothing old left mixed in), once the new parts are written; any
    other folder is refused with nothing deleted."""
    s = tmp_path / "set"
    (s / "audio").mkdir(parents=True)
    (s / "manifest.jsonl").write_text("{}\n")
    (s / "audio" / "old.wav").write_bytes(b"x")
    (s / "notes.txt").write_text("mine")
    mine = prepare_out(s, shards=False)
    assert sorted(p.name for p in mine) == ["audio", "manifest.jsonl"] and (s / "audio" / "old.wav").exists()
    new = partial(s)
    assert new.parent == s.parent and new.name.endswith(".partial")
    (new / "audio").mkdir(parents=True)
    (new / "manifest.jsonl").write_text("{}\n")
    replace_out(s, mine, new)
    assert sorted(p.name for p in s.iterdir()) == ["audio", "manifest.jsonl", "notes.txt"] and not new.exists()
    assert not (s / "audio" / "old.wav").exists()
    (s / "manifest.jsonl").unlink()
    with pytest.raises(ValueError, match="holds no training shards"):
        prepare_out(s, shards=True)  # notes.txt is not ours
    (s / "manifest.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="holds a scenario set"):
        prepare_out(s, shards=True)
    d = tmp_path / "shards"
    for i in range(3):
        (d / f"shard-{i:05d}").mkdir(parents=True)
    (d / ".done").write_text("")
    assert [p.name for p in prepare_out(d, shards=True)] == ["shard-00000", "shard-00001", "shard-00002"]
    with pytest.raises(ValueError, match="holds training shards"):
        prepare_out(d, shards=False)
    f = tmp_path / "foreign"
    f.mkdir()
    (f / "audio").mkdir()
    with pytest.raises(ValueError, match="not empty"):
        prepare_out(f, shards=False)
    assert (f / "audio").is_dir()
    assert prepare_out(tmp_path / "new" / "deeper", shards=True) == []


def test_synth_under_a_parent_it_cannot_write_works_inside_its_folder(tmp_path, monkeypatch):
    """--out on a mount point (its parent not writable): the new parts are written in OUT/.partial, then moved."""
    out = tmp_path / "mnt"
    out.mkdir()
    monkeypatch.setattr(synth.os, "access", lambda p, mode: Path(p) != tmp_path)
    assert partial(out) == out / ".partial"
    synth.run(str(out), per_family=1, seed=3, families="turn")
    synth.run(str(out), per_family=1, seed=4, families="turn")  # replaced, as anywhere
    assert sorted(p.name for p in out.iterdir()) == ["audio", "manifest.jsonl", "pictures"]


def test_synth_that_fails_keeps_the_old_set(tmp_path, monkeypatch, capsys):
    """`microturn synth` writes beside the folder and swaps the result in at the end: bad numbers are refused before
    anything is touched, and a run that fails (or is interrupted) half-way leaves the old set whole; the next run
    clears what it left."""
    out = tmp_path / "set"
    synth.run(str(out), per_family=1, seed=3, families="turn")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    manifest = (out / "manifest.jsonl").read_text()
    for bad in ({"seed": -1}, {"workers": 0}, {"families": "turn,turn"}):
        with pytest.raises(ValueError, match="--seed|--workers|twice"):
            synth.run(str(out), **({"per_family": 1, "families": "turn"} | bad))

    def broken(tmp, *args, **kwargs):
        (Path(tmp) / "audio").mkdir(parents=True)
        (Path(tmp) / "audio" / "half.wav").write_bytes(b"x")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(synth, "write_scenario_set", broken)
        with pytest.raises(KeyboardInterrupt):
            synth.run(str(out), per_family=1, seed=4, families="turn")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "manifest.jsonl").read_text() == manifest and synth.partial(out).exists()
    synth.run(str(out), per_family=1, seed=4, families="turn")
    assert not synth.partial(out).exists() and (out / "manifest.jsonl").read_text() != manifest
    assert "replacing the scenario set" in capsys.readouterr().out
