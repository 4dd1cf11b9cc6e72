"""Training throughput of the model presets: tokens per second and model FLOPs utilisation (MFU).

For each preset: a fresh model (random weights, the tokenizer's vocabulary), AdamW, and real batches drawn from
shards the way ``microturn train`` draws them (``StepBatches``: conversations, buckets of like lengths), stepped with
the training loop's own ``train_step`` (bf16 autocast on a GPU, fp32 on a CPU; gradient clipping; AdamW). After a
warm-up, ``--steps`` steps are timed.

- tokens/s: the batches' real tokens (micro-turns x ``layout.length``, padding not counted) per second, as the
  training progress bar counts them.
- FLOPs: counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over the forward and backward of each
  timed batch, in an untimed step of its own just before (matrix products, attention, convolutions; a mixture of
  experts counts only the experts each token is routed to). Attention counts the whole causal square, as nanoGPT's
  and PaLM's MFU do. FLOPs per token: over the positions computed (padding included). Model FLOPs: each batch's
  share of its real tokens, so padding counts as waste, not as work.
- MFU: model FLOPs per second over the device's peak: on a GPU its dense bf16 peak from the vendor's datasheet
  (``PEAK_BF16``; ``--peak-tflops`` for others), on a CPU the fp32 matrix-product rate measured here at the same
  thread count (an upper bound the CPU can reach, not a datasheet figure; on a busy machine it is low, and MFU can
  pass 100 %).
- memory: the GPU's peak allocated memory, or the process's peak resident memory on a CPU.

A preset that runs out of GPU memory is tried again with half the batch. Writes a table, ``--json`` and a PNG.

    .venv/bin/python benchmarks/train_throughput.py [--presets cpu cpu-moe] [--data data/shards/val]
        [--batch 8] [--steps 10] [--threads 1] [--json out/train_throughput.json]
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import (FlopCounterMode, register_flop_formula, sdpa_backward_flop_count,
                                      sdpa_flop_count)

from microturn.model.config import PRESETS, preset
from microturn.model.model import InteractionModel
from microturn.stream.tokenizer import default_tokenizer
from microturn.train.config import TrainConfig
from microturn.train.data import Shards
from microturn.train.loop import optimizer, step_batches, train_step

# dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from NVIDIA's datasheets; matched against the device name as
# whole words (an A10G, with no NVIDIA datasheet, is not an A10: give its peak with --peak-tflops)
PEAK_BF16 = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "GH200": 989.4, "B200": 2250.0,
             "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


# torch counts the GPU attention kernels but not the CPU one: the same formulas for it
@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_attention(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _cpu_attention_backward(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


def gpu_peak(name: str) -> float | None:
    """The datasheet peak for a device name such as 'NVIDIA H100 80GB HBM3' (the longest key it holds as words)."""
    keys = [k for k in PEAK_BF16 if re.search(rf"\b{re.escape(k)}\b", name)]
    return PEAK_BF16[max(keys, key=len)] if keys else None


def cpu_peak(n: int = 2048, reps: int = 8) -> float:
    """The best fp32 matrix-product rate of this CPU at torch's thread count, TFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e12


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def step_flops(model, opt, batch: dict, c: TrainConfig) -> float:
    """The FLOPs of one training step's forward and backward (the optimiser's element-wise update is not counted)."""
    with FlopCounterMode(display=False) as fc:
        train_step(model, model, opt, batch, c)
    return float(fc.get_total_flops())


def measure(name: str, shards: Shards, c: TrainConfig, dev: torch.device, warmup: int, steps: int) -> dict:
    cfg = preset(name, vocab_size=default_tokenizer().vocab_size, layout=shards.layout)
    torch.manual_seed(c.seed)
    model = InteractionModel(cfg).to(dev)
    model.train()
    opt = optimizer(model, c, dev)
    batches = step_batches(c, shards, cfg, steps=warmup + steps)
    L = cfg.layout.length

    def on_dev(i):
        return {k: v.to(dev) for k, v in batches[i].items()}

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup):
        train_step(model, model, opt, on_dev(i), c)
    times, tokens, positions, flops, work = [], 0, 0, 0.0, 0.0
    for i in range(warmup, warmup + steps):
        b = on_dev(i)  # made before the clock starts: the timed part is the step, as with workers making batches
        real, computed = int(b["valid"].sum()) * L, b["valid"].numel() * L
        f = step_flops(model, opt, b, c)  # counted on a step of its own (counting slows a step), then timed
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(_timed(lambda: train_step(model, model, opt, b, c)))
        tokens, positions, flops, work = tokens + real, positions + computed, flops + f, work + f * real / computed
    total = sum(times)
    tps = tokens / total
    mem = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"preset": name, "params": model.n_params(), "batch": c.batch, "steps": steps,
            "step_s_median": statistics.median(times), "tokens_per_s": tps, "padding": 1 - tokens / positions,
            "flops_per_token": flops / positions, "six_n": 6 * model.n_params(),
            "model_tflops": work / total / 1e12, "peak_memory_gb": mem / 2**30}


def fit(name: str, shards: Shards, c: TrainConfig, dev: torch.device, warmup: int, steps: int) -> dict:
    """``measure`` at ``c.batch``, halved until the step fits in the GPU's memory."""
    while True:
        try:
            return measure(name, shards, c, dev, warmup, steps)
        except torch.cuda.OutOfMemoryError:
            if c.batch == 1:
                raise
        c.batch //= 2  # out of the except block: the failed step's tensors are freed by now
        torch.cuda.empty_cache()
        print(f"{name}: out of memory, batch {c.batch} next", flush=True)


def plot(rows: list[dict], png: Path, device: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["preset"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    tps = [r["tokens_per_s"] for r in rows]
    ax[0].bar_label(ax[0].bar(names, tps, color="tab:blue"), labels=[f"{t:,.0f}" for t in tps], fontsize=8)
    if max(tps) > 20 * min(tps):  # presets 100 times apart in size
        ax[0].set_yscale("log")
    ax[0].set_title("training tokens per second")
    mfu = [100 * r["mfu"] for r in rows]
    ax[1].bar_label(ax[1].bar(names, mfu, color="tab:green"), labels=[f"{m:.1f}" for m in mfu], fontsize=8)
    ax[1].set_title("model FLOPs utilisation (%)")
    for a in ax:
        a.tick_params(axis="x", rotation=30)
        a.margins(y=0.15)
    fig.suptitle(device, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=None, choices=list(PRESETS),
                   help="default: cpu and cpu-moe on a CPU, every preset on a GPU")
    p.add_argument("--data", default="data/shards/val", help="shards to draw batches from (`microturn synth --shards`)")
    p.add_argument("--batch", type=int, default=None, help="sessions per step (default 8 on a CPU, 64 on a GPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (0: leave the default)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for a GPU not in PEAK_BF16")
    p.add_argument("--json", default="out/train_throughput.json")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be 1 or more and --warmup 0 or more")
    if a.threads:
        torch.set_num_threads(a.threads)
    if not Path(a.data).exists():
        p.error(f"no shards at {a.data}: write some with `microturn synth --out {a.data} --shards --per-family 8`")
    shards = Shards(a.data)
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    if gpu:
        name = torch.cuda.get_device_name(dev)
        peak, how = a.peak_tflops or gpu_peak(name), "given" if a.peak_tflops else "bf16 datasheet peak"
        if peak is None:
            p.error(f"no datasheet peak for {name!r}: give its dense bf16 peak with --peak-tflops")
    else:
        name = f"CPU, torch threads: {torch.get_num_threads()}"
        peak, how = a.peak_tflops or cpu_peak(), "given" if a.peak_tflops else "fp32 matrix-product rate measured here"
    device = f"{name}; torch {torch.__version__}; peak {peak:.3g} TFLOP/s ({how})"
    print(device, flush=True)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name_ in a.presets or (list(PRESETS) if gpu else ["cpu", "cpu-moe"]):
        batch = a.batch or (64 if gpu else 8)
        # the options train_gpu.sh trains with; every session eligible (curriculum 1)
        c = TrainConfig(batch=batch, conversations=0.4, bucket=8, curriculum=1.0, early_listen=3, recap_weight=0.1,
                        lr=1e-4)
        try:
            r = fit(name_, shards, c, dev, a.warmup, a.steps)
        except torch.cuda.OutOfMemoryError:
            print(f"{name_}: out of memory at batch 1", flush=True)
            continue
        except KeyboardInterrupt:  # Ctrl-C, or train_gpu.sh's time is up: what was measured is written
            print(f"stopped while measuring {name_}", flush=True)
            break
        r["mfu"] = r["model_tflops"] / peak
        rows.append(r)
        print(f"{r['preset']:>9}: {r['params'] / 1e6:7.1f} M params, batch {r['batch']:3d}, "
              f"step {r['step_s_median']:.3f} s, "
              f"{r['tokens_per_s']:,.0f} tokens/s, {r['flops_per_token'] / 1e6:,.1f} MFLOP/token "
              f"(6N {r['six_n'] / 1e6:,.1f}), {r['model_tflops']:.3g} TFLOP/s, MFU {100 * r['mfu']:.1f} %, "
              f"padding {100 * r['padding']:.0f} %, peak memory {r['peak_memory_gb']:.1f} GB", flush=True)
        out.write_text(json.dumps({"device": device, "peak_tflops": peak, "rows": rows}, indent=1))
        plot(rows, out.with_suffix(".png"), device)  # after each preset: a run cut short keeps what it measured
        if gpu:
            torch.cuda.empty_cache()
    if not rows:
        sys.exit("no preset could be measured")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
