"""Per-micro-turn streaming cost of one session, with a breakdown, on this machine.

Builds the ``cpu`` preset (random weights, the tokenizer's vocabulary) and steps one session through ~300 micro-turns
after a warm-up that fills its KV cache (the steady state of a long session), for two behaviours:
- silence: the model ends every micro-turn at once (out = <eot>; one forward call per micro-turn, the <eot> and
  <pad>s going in with the next micro-turn's inputs; no flow head, no vocoder: the agent's audio is over);
- speaking: the model writes n_out - 1 word tokens and <eot> every micro-turn (the most a micro-turn can cost).
The behaviour is imposed by a bias on the text logits (random weights would babble); everything else is the real
code path.

Two measurements per behaviour:
1. the parts, timed with ``time.perf_counter`` around the calls the real ``InteractionModel.step`` makes: encode
   (dMel of the 200 ms chunk + the camera frame resized for the hMLP), embed (input embedders: dMel, hMLP, text,
   clock), transformer (the input chunk and the out-token forwards), text decoding (logits + sampling), flow head
   (4 Euler steps), vocoder (Griffin-Lim on the window's 16 mel frames, when a frame is voiced, as in a session);
2. end to end: encode + the real ``model.step`` + vocoder (and ``model.step`` alone).

    .venv/bin/python benchmarks/step.py [--threads 1 2] [--steps 300] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from microturn.codecs import audio, dmel
from microturn.codecs.vocoder import GriffinLim
from microturn.model.config import preset
import microturn.model.model as model_mod
from microturn.model.model import InteractionModel, Sampling
from microturn.runtime.perf import steady_after
from microturn.stream.layout import audio_tokens, video_frame, voiced_frames
from microturn.stream.tokenizer import EOT, PAD, default_tokenizer

PARTS = ("encode", "embed", "transformer", "text", "flow", "vocoder")


def speech(n: int) -> np.ndarray:
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["espeak-ng", "-w", f"{d}/s.wav", "Seventy two apples, please. How are you doing "
                            "today? Say bingo in twelve seconds."], check=True, capture_output=True)
            return np.resize(audio.load_wav(f"{d}/s.wav"), n).astype(np.float32)
    return (np.random.default_rng(0).standard_normal(n) * 0.05).astype(np.float32)


def behave(model: InteractionModel, mode: str, word: int):
    """Bias the text logits so the model is silent (<eot> first) or speaks (a word token, never <eot> early)."""
    base = InteractionModel.text_logits.__get__(model)
    bias = torch.zeros(model.cfg.vocab_size)
    if mode == "silence":
        bias[EOT] = 1e4
    else:
        bias[EOT] = -1e4
        bias[word] = 1e4
    model.text_logits = lambda h: base(h) + bias


class Inputs:
    """A session's input stream: 200 ms of speech per micro-turn through the streaming dMel encoder, one camera
    frame (240 x 320) per micro-turn, no typed text."""

    def __init__(self, model: InteractionModel, seed: int = 0):
        L = model.layout
        self.L = L
        self.audio = speech(L.samples * 50).reshape(50, L.samples)
        self.frames = np.random.default_rng(seed).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)
        self.stream = dmel.DMelStream()
        self.t = 0

    def next(self):
        """-> audio [1, A, F, 80], video [1, S, S, 3], video_on [1], text_in [1, K] (what a session hands step)."""
        L, t = self.L, self.t
        self.t += 1
        bins = self.stream.push(self.audio[t % 50])
        a = torch.from_numpy(audio_tokens(bins, L))[None]
        frame, on = video_frame(self.frames[t % 8], L)
        return a, torch.from_numpy(frame)[None], torch.tensor([on]), torch.full((1, L.n_text_in), PAD)


class Timed:
    """Times the parts inside the real ``model.step``: wraps the embedders, the transformer calls, the text head and
    sampling, and the flow head, adding each call's time to ``times[part]`` (so nothing is replicated here)."""

    def __init__(self, model: InteractionModel):
        self.times = dict.fromkeys(PARTS, 0.0)
        self.undo = []
        self.wrap(model.embed, "inputs", "embed")
        self.wrap(model.embed, "outputs", "embed")
        self.wrap(model, "_run", "transformer")
        self.wrap(model, "text_logits", "text")
        self.wrap(model.flow, "sample", "flow")
        self.wrap(model_mod, "sample", "text")

    def wrap(self, obj, name: str, part: str):
        fn = getattr(obj, name)
        had = name in vars(obj)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.times[part] += time.perf_counter() - t0

        setattr(obj, name, timed)
        self.undo.append(lambda: setattr(obj, name, fn) if had else delattr(obj, name))

    def close(self):
        for u in reversed(self.undo):
            u()


def vocode(voc: GriffinLim, mel: torch.Tensor):
    """As a session does: a window without a voiced frame is silence, not vocoded."""
    if voiced_frames(mel.numpy()).any():
        voc(mel.numpy())


def measure(model: InteractionModel, mode: str, steps: int, warmup: int, voc: GriffinLim) -> dict:
    word = default_tokenizer().encode_word("bingo")[0]
    behave(model, mode, word)
    sampling = Sampling()
    L = model.layout
    pc = time.perf_counter
    # 1. the parts, timed inside the real model.step
    state, inp = model.new_state(1), Inputs(model)
    per_part = {k: [] for k in PARTS}
    timed = Timed(model)
    for s in range(warmup + steps):
        timed.times = dict.fromkeys(PARTS, 0.0)
        t0 = pc()
        x = inp.next()
        timed.times["encode"] = pc() - t0
        res = model.step(state, *x, sampling=sampling)
        t0 = pc()
        vocode(voc, res.mel[0])
        timed.times["vocoder"] = pc() - t0
        if s >= warmup:
            for k in PARTS:
                per_part[k].append(timed.times[k] * 1000)
    timed.close()
    # 2. end to end, nothing wrapped
    state, inp = model.new_state(1), Inputs(model)
    e2e, step_ms, outs = [], [], []
    for s in range(warmup + steps):
        t0 = pc()
        x = inp.next()
        t1 = pc()
        res = model.step(state, *x, sampling=sampling)
        t2 = pc()
        vocode(voc, res.mel[0])
        t3 = pc()
        if s >= warmup:
            e2e.append((t3 - t0) * 1000)
            step_ms.append((t2 - t1) * 1000)
        outs.append(res.out[0].tolist())
    del model.text_logits
    expected = [EOT] + [PAD] * (L.n_out - 1) if mode == "silence" else [word] * (L.n_out - 1) + [EOT]
    assert all(o == expected for o in outs), outs[:3]
    stat = lambda v: {"median": round(float(np.median(v)), 3), "p99": round(float(np.percentile(v, 99)), 3)}  # noqa
    return {"mode": mode, "out": expected, "parts_ms": {k: stat(v) for k, v in per_part.items()},
            "parts_sum_ms": stat(np.sum([per_part[k] for k in PARTS], 0)), "step_ms": stat(step_ms),
            "end_to_end_ms": stat(e2e), "session_tokens_at_end": int(state.tokens[0])}


def run(threads: int, steps: int = 300, warmup: int | None = None, name: str = "cpu") -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = default_tokenizer()
    cfg = preset(name, vocab_size=tok.vocab_size)
    model = InteractionModel(cfg).eval()
    warmup = steady_after(model) if warmup is None else warmup  # from then on the KV cache is full
    voc = GriffinLim()
    res = {"preset": name, "params": model.n_params(), "d_model": cfg.d_model, "layers": cfg.n_layer,
           "window": cfg.window, "pinned": cfg.pinned, "tokens_per_micro_turn": cfg.layout.length,
           "delta_ms": cfg.layout.delta * 1000, "threads": threads, "steps": steps,
           "vocoder_iters": voc.iters, "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2),
           "rows": []}
    for mode in ("silence", "speaking"):
        res["rows"].append(measure(model, mode, steps, warmup, voc))
    res["load_after"] = round(os.getloadavg()[0], 2)
    return res


def print_table(res: dict):
    print(f"preset {res['preset']}: {res['params'] / 1e6:.1f}M parameters, d {res['d_model']}, {res['layers']} layers, "
          f"{res['tokens_per_micro_turn']} tokens per {res['delta_ms']:.0f} ms micro-turn, window {res['window']} "
          f"+ pinned {res['pinned']}; torch threads {res['threads']}; {res['steps']} steps after warm-up; "
          f"Griffin-Lim {res['vocoder_iters']} iterations; {res['cpus']} CPUs, load average {res['load_before']} "
          f"before, {res['load_after']} after")
    head = ["behaviour", *PARTS, "sum", "model.step", "end to end"]
    print("median ms  " + "".join(f"{h:>12s}" for h in head[1:]))
    for r in res["rows"]:
        vals = [r["parts_ms"][k]["median"] for k in PARTS] + [r["parts_sum_ms"]["median"], r["step_ms"]["median"],
                                                               r["end_to_end_ms"]["median"]]
        print(f"{r['mode']:10s} " + "".join(f"{v:12.2f}" for v in vals))
    print("p99 ms     " + "".join(f"{h:>12s}" for h in head[1:]))
    for r in res["rows"]:
        vals = [r["parts_ms"][k]["p99"] for k in PARTS] + [r["parts_sum_ms"]["p99"], r["step_ms"]["p99"],
                                                            r["end_to_end_ms"]["p99"]]
        print(f"{r['mode']:10s} " + "".join(f"{v:12.2f}" for v in vals))
    budget = res["delta_ms"]
    for r in res["rows"]:
        e = r["end_to_end_ms"]
        print(f"  {r['mode']}: out {r['out']}; end to end median {e['median']:.1f} ms, p99 {e['p99']:.1f} ms = "
              f"{100 * e['p99'] / budget:.0f} % of the {budget:.0f} ms budget")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="torch thread counts to measure")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=None, help="default: until the KV cache is full (steady state)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args(argv)
    results = []
    for th in a.threads:
        res = run(th, a.steps, a.warmup, a.preset)
        print_table(res)
        print()
        results.append(res)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
