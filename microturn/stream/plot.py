"""Pictures: one micro-turn of the layout, and any session's timeline (speech, words, text, video, rule windows)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import Layout
from .words import Word

COLOURS = {"clock": "#7f7f7f", "audio": "#1f77b4", "video": "#2ca02c", "text_in": "#ff7f0e", "out": "#d62728"}
RULE_COLOURS = {"say": "#2ca02c", "silent": "#7f7f7f", "respond": "#1f77b4", "stop": "#d62728", "continue": "#9467bd",
                "no_gap": "#8c564b", "no_takeover": "#e377c2", "count": "#17becf"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layout(layout: Layout, png: str | Path) -> Path:
    """Draw the token block of one micro-turn and how two micro-turns follow each other."""
    plt = _plt()
    kinds = layout.slot_kinds()
    fig, ax = plt.subplots(figsize=(13, 2.8))
    labels = {"clock": "clock\nt·Δ", "audio": "dMel\n{} fr".format(layout.frames_per_token),
              "video": "frame\n4 patches", "text_in": "text\nin", "out": "out"}
    for rep in range(2):
        x0 = rep * (len(kinds) + 1)
        for i, k in enumerate(kinds):
            ax.add_patch(plt.Rectangle((x0 + i, 0), 0.92, 1, color=COLOURS[k], alpha=0.85 if rep == 0 else 0.45))
            ax.text(x0 + i + 0.46, 0.5, labels[k], ha="center", va="center", fontsize=7, color="white")
        n_in = layout.n_in
        ax.annotate("", xy=(x0, 1.15), xytext=(x0 + n_in - 0.08, 1.15), arrowprops=dict(arrowstyle="<->"))
        ax.text(x0 + n_in / 2, 1.3, f"input of micro-turn {'t' if rep == 0 else 't+1'}: window "
                f"[{'t' if rep == 0 else 't+1'}Δ, {'t+1' if rep == 0 else 't+2'}Δ)", ha="center", fontsize=8)
        ax.annotate("", xy=(x0 + n_in, 1.15), xytext=(x0 + len(kinds) - 0.08, 1.15),
                    arrowprops=dict(arrowstyle="<->"))
        ax.text(x0 + n_in + layout.n_out / 2, 1.3, "output: words + <eot>,\nmel of the next window", ha="center",
                fontsize=8)
    ax.text(0, -0.35, f"Δ = {layout.delta * 1000:g} ms; {layout.length} tokens per micro-turn "
            f"({layout.n_audio} audio x {layout.frames_per_token} dMel frames, {layout.n_video} video token of "
            f"{layout.n_patches} patches, "
            f"{layout.n_text_in} text-in slots, {layout.n_out} out slots); silence = a lone <eot>", fontsize=8)
    ax.set_xlim(-0.5, 2 * (len(kinds) + 1))
    ax.set_ylim(-0.6, 1.8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def plot_timeline(png: str | Path, duration: float, user_audio: np.ndarray | None = None,
                  words: list[Word] = (), text: list = (), rules: list[dict] = (), marks: list[float] = (),
                  title: str = "", results: list[bool] | None = None, rate: int = 16000) -> Path:
    """A session on one clock: user audio envelope, words of each speaker, typed text, video marks (e.g. the times
    reps complete) and the rule windows (green/red when results say whether each rule held)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(14, 4.2))
    if user_audio is not None and len(user_audio):
        hop = rate // 100
        n = len(user_audio) // hop
        env = np.abs(user_audio[: n * hop]).reshape(n, hop).max(1)
        ax.fill_between(np.arange(n) / 100, 3 - env / (env.max() + 1e-9) * 0.8, 3, color="#1f77b4", alpha=0.3,
                        step="mid")
    rows = {"user": 2.5, "other": 2.0, "agent": 1.0}
    for w in words:
        y = rows.get(w.speaker, 2.0)
        c = "#d62728" if w.speaker == "agent" else ("#1f77b4" if w.speaker == "user" else "#9467bd")
        ax.add_patch(plt.Rectangle((w.start, y), max(0.02, w.end - w.start), 0.35, color=c, alpha=0.6))
        ax.text(w.start, y + 0.4, w.w, fontsize=6, rotation=45)
    for e in text:
        ax.axvline(e.t, color="#ff7f0e", lw=1)
        ax.text(e.t, 3.25, f"{getattr(e, 'source', 'typed')}: {e.text}", fontsize=7, color="#ff7f0e")
    for m in marks:
        ax.axvline(m, color="#2ca02c", lw=0.8, ls=":")
    for i, r in enumerate(rules):
        a, b = r.get("window") or ([r["after"], r["after"] + r["within"]] if "after" in r else [0, duration])
        ok = None if results is None else results[i]
        col = RULE_COLOURS.get(r["kind"], "k") if ok is None else ("#2ca02c" if ok else "#d62728")
        y = 0.1 + 0.12 * (i % 6)
        ax.add_patch(plt.Rectangle((a, y), max(0.02, b - a), 0.1, color=col, alpha=0.5))
        label = r["kind"] + (f" {r['text']}" if "text" in r else "") + ("" if ok is None else (" ✓" if ok else " ✗"))
        ax.text(a, y + 0.01, label, fontsize=6)
    ax.set_yticks([0.4, 1.15, 2.15, 2.65], ["rules", "agent", "other", "user"])
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 3.6)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
